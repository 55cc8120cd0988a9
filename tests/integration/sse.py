"""A plain server-sent-events client for tests: http.client over a real socket, every
read bounded by a deadline."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit


class SSE:
    def __init__(self, url: str, headers: dict | None = None, timeout: float = 10.0):
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        self.conn.request("GET", u.path + (f"?{u.query}" if u.query else ""),
                          headers={"Accept": "text/event-stream", **(headers or {})})
        self.sock = self.conn.sock  # http.client lets go of it once the response owns the connection
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())
        self.comments: list[str] = []
        self.retry: int | None = None

    def json(self) -> dict:
        return json.loads(self.resp.read())

    def next(self, deadline: float) -> dict | None:
        """The next event ({"id", "event", "data"}), or None when the server ended the stream.
        Raises TimeoutError at the deadline (time.monotonic())."""
        ev: dict = {"id": None, "event": "message", "data": None}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event before the deadline")
            self.sock.settimeout(left)
            line = self.resp.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if not line:
                if ev["data"] is not None:
                    return ev
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "":
                self.comments.append(value)
            elif key == "retry":
                self.retry = int(value)
            elif key == "data":
                ev["data"] = json.loads(value)
            else:
                ev[key] = value

    def wait(self, pred, what: str, timeout: float = 10.0) -> dict:
        """Read events until pred(event) holds; fail at the deadline."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                ev = self.next(deadline)
            except TimeoutError:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {seen[-5:]}") from None
            if ev is None:
                raise AssertionError(f"the stream ended while waiting for {what}; got {seen[-5:]}")
            seen.append(ev)
            if pred(ev):
                return ev

    def close(self) -> None:
        self.resp.close()
        self.conn.close()
        self.sock.close()
