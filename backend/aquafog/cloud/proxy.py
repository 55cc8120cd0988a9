"""Meter detail at the cloud, served by the owning fog: the cloud keeps no readings, so
GET /api/v1/meters/<id>[/readings|/commands] is forwarded to the fog's own API (the URL
the fog announces in its info message), and the fog's answer is passed through."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request

from . import RoutingError

TIMEOUT_S = 3.0
MAX_BODY = 16 * 1024 * 1024


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
