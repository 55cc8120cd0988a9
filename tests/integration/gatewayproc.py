"""A real `aquafog gateway` process for integration tests, with an HTTP client."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from aquafog.gateway.local import LocalGateway


class GatewayProcess(LocalGateway):
    def __init__(self, workdir, broker_port: int, meters=(), **settings):
        defaults = {
            "mqtt_client_id": "aquafog-gateway-test", "batch_max_delay_ms": 50,
            # emulated meters live up to 360x faster than real time: 1 s between acks
            # would be 6 simulated minutes, longer than their ack timeout
            "ack_interval_ms": 100,
        }
        super().__init__(workdir, broker_port, meters, **{**defaults, **settings})
        self.api_token = self.token("test-admin")  # every request below is an admin's

    def request(self, method: str, path: str, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Authorization": f"Bearer {self.api_token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str):
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body=None, raw: bytes | None = None):
        return self.request("POST", path, body, raw)

    def wait_for(self, pred, what: str, timeout: float = 10.0, interval: float = 0.02):
        """Poll the API until pred() is truthy (the API is the only window into the process)."""
        deadline = time.time() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(interval)
