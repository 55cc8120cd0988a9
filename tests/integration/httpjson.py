"""Tiny HTTP/JSON helpers for tests that talk to a server's API over real sockets."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

TOKENS: dict[str, str] = {}  # URL prefix -> API token sent to it


def authorize(prefix: str, token: str) -> None:
    """Send `token` with every request to URLs under `prefix` (until forget(prefix))."""
    TOKENS[prefix] = token


def forget(prefix: str) -> None:
    TOKENS.pop(prefix, None)


def _headers(url: str) -> dict:
    for prefix, token in TOKENS.items():
        if url.startswith(prefix):
            return {"Authorization": f"Bearer {token}"}
    return {}


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_headers(url)), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post(url: str, body: dict, method: str = "POST") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json", **_headers(url)})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def put(url: str, body: dict) -> tuple[int, dict]:
    return post(url, body, "PUT")


def wait_for(pred, what: str, timeout: float = 20.0):
    """Poll pred() until it is truthy (an HTTP API is the only window into the process)."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return value
