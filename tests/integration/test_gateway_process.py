"""The gateway as an operator runs it: clean stop on SIGTERM, and no half-alive gateway
if its receiver process dies (real processes, real Mosquitto)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

pytestmark = pytest.mark.integration


def receivers(pid: int) -> list[int]:
    """The gateway's receiver process(es): children started by multiprocessing's spawn."""
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "spawn_main"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_sigterm_stops_the_gateway_and_its_receiver(gateway_factory):
    gw = gateway_factory(meters=["m1"]).start()
    pid = gw.proc.pid
    [receiver] = receivers(pid)
    assert gw.stop() == 0
    assert not os.path.exists(f"/proc/{receiver}") or open(f"/proc/{receiver}/stat").read().split()[2] == "Z"


def test_a_dead_receiver_stops_the_gateway_with_an_error(gateway_factory):
    gw = gateway_factory(meters=["m1"]).start()
    [receiver] = receivers(gw.proc.pid)
    os.kill(receiver, signal.SIGKILL)
    assert gw.proc.wait(20) == 1  # a supervisor (systemd) restarts it; the broker kept the session
    assert "the MQTT receiver process exited" in gw.log()
