"""Fixtures shared by every test folder.

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
