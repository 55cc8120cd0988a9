"""Meter detail at the cloud, served by the owning fog: the cloud keeps no readings, so
GET /api/v1/meters/<id>[/readings|/commands] is forwarded to the fog's own API (the URL
the fog announces in its info message), and the fog's answer is passed through."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request

from . import RoutingError

TIMEOUT_S = 3.0
MAX_BODY = 16 * 1024 * 1024
STREAM_TIMEOUT_S = 30.0  # a fog's live stream sends a comment every second: silence this long means it is gone


def fetch(api_url: str, region: str, path: str, query: str, token: str) -> tuple[int, dict]:
    """(status, JSON body) of GET <api_url>/api/v1/<path>?<query> at the fog; RoutingError
    502/504 when the fog does not answer with JSON."""
    url = f"{api_url}/api/v1/{urllib.parse.quote(path)}" + (f"?{query}" if query else "")
    where = f"fog {region!r} at {api_url}"
    try:
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as r:
            status, raw = r.status, r.read(MAX_BODY)
    except urllib.error.HTTPError as e:  # the fog answered with an error of its own: pass it on
        status, raw = e.code, e.read(MAX_BODY)
        if status in (401, 403):  # the cloud's token, not the caller's: say whose it is
            raise RoutingError(502, "bad_gateway", f"{where} refused this cloud's token (HTTP {status}): make a new "
                                                   f"one with `aquafog token add` there and set fog_tokens.{region}"
                                                   ) from None
    except (socket.timeout, TimeoutError):
        raise RoutingError(504, "gateway_timeout", f"{where} did not answer within {TIMEOUT_S:g} s: it may be "
                                                   "overloaded or cut off; GET /api/v1/fogs shows when it was last "
                                                   "heard from") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RoutingError(502, "bad_gateway", f"{where} could not be reached ({reason}): check that its gateway "
                                               "runs and that api_url in its config is an address the cloud can "
                                               "reach") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise RoutingError(502, "bad_gateway", f"{where} answered HTTP {status} without JSON: is api_url the "
                                               "AquaFog gateway's address?") from None
    if not isinstance(body, dict):
        raise RoutingError(502, "bad_gateway", f"{where} answered with JSON that is not an object")
    return status, body



class Stream:
    """A fog's open live stream: its lines as they come, then close()."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, sock):
        self.conn, self.resp, self.sock = conn, resp, sock

    def readline(self) -> bytes:
        """The next line; b"" when the fog ended the stream or fell silent."""
        try:
            return self.resp.readline(65536)
        except (OSError, http.client.HTTPException):
            return b""

    def close(self) -> None:
        self.resp.close()
        self.conn.close()
        self.sock.close()


def open_stream(api_url: str, region: str, path: str, token: str, last_event_id: str | None):
    """The fog's live stream (server-sent events) for the cloud to relay: (200, Stream) or
    (the fog's error status, its JSON body); RoutingError 502/504 when the fog does not answer."""
    where = f"fog {region!r} at {api_url}"
    u = urllib.parse.urlsplit(api_url)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname, u.port, timeout=TIMEOUT_S)
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id[:128]
    try:
        conn.request("GET", f"/api/v1/{urllib.parse.quote(path)}", headers=headers)
        sock = conn.sock  # the response takes it over from the connection
        resp = conn.getresponse()
    except (socket.timeout, TimeoutError):
        conn.close()
        raise RoutingError(504, "gateway_timeout", f"{where} did not answer within {TIMEOUT_S:g} s") from None
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise RoutingError(502, "bad_gateway", f"{where} could not be reached ({e}): check that its gateway runs "
                                               "and that api_url in its config is an address the cloud can reach"
                           ) from None
    if resp.status != 200:
        raw = resp.read(MAX_BODY)
        conn.close()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            raise RoutingError(502, "bad_gateway", f"{where} answered HTTP {resp.status} without JSON") from None
    sock.settimeout(STREAM_TIMEOUT_S)
    return 200, Stream(conn, resp, sock)
