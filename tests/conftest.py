"""Fixtures shared by every test folder.

`gateway_factory` and `make_fleet` start real gateway processes and emulated meters on `broker`.

`broker` is a real Mosquitto on 127.0.0.1 and a free port, with the configuration the
gateway generates (never a mocked broker in integration tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aquafog.broker import LocalBroker

VECTORS_PATH = Path(__file__).parent / "vectors" / "mqtt_v1.json"


@pytest.fixture(scope="session")
def vectors() -> dict:
    return json.loads(VECTORS_PATH.read_text())


@pytest.fixture
def broker(tmp_path):
    b = LocalBroker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def gateway_factory(tmp_path, broker):
    """Real `aquafog gateway` processes on `broker`; every one is stopped at teardown."""
    from integration.gatewayproc import GatewayProcess

    made = []

    def make(meters=(), **settings) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / f"gw{len(made)}", broker.port, meters, **settings)
        made.append(gw)
        return gw
    yield make
    for gw in made:
        gw.stop()


@pytest.fixture
def make_fleet(broker, tmp_path):
    """Emulated meters (the real firmware) on `broker`; every fleet is stopped at teardown."""
    from emulator import Fleet

    fleets = []

    def make(ids, **kw):
        kw.setdefault("fs_root", tmp_path / f"fleet{len(fleets)}")
        f = Fleet(broker.host, broker.port, ids, **kw)
        fleets.append(f)
        return f
    yield make
    for f in fleets:
        f.stop()
