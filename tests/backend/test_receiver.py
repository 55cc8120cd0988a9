"""The receiver process's own logic, without a broker: what it does when the core process
dies under it (kill -9), and what it says about the broker's session on each connect."""

from __future__ import annotations

import logging
import multiprocessing
from types import SimpleNamespace

import pytest

from aquafog.gateway.receiver import Receiver, ReceiverSettings

SETTINGS = ReceiverSettings(host="127.0.0.1", port=1, client_id="t", username="", password="",
                            subscriptions=["aquafog/+/tele/#"], session_expiry_s=60)


@pytest.fixture
def pipes():
    ctx = multiprocessing.get_context("spawn")
    rx_out, rx_in = ctx.Pipe(duplex=False)    # receiver -> core
    ack_out, ack_in = ctx.Pipe(duplex=False)  # core -> receiver
    yield rx_out, rx_in, ack_out, ack_in
    for c in (rx_out, rx_in, ack_out, ack_in):
        c.close()


def test_a_dead_core_stops_the_receiver_quietly(pipes, caplog):
    rx_out, rx_in, ack_out, ack_in = pipes
    r = Receiver(SETTINGS, rx_in, ack_out)
    assert r._send(("rx", "connected", 1))
    assert rx_out.recv() == ("rx", "connected", 1)
    rx_out.close()  # the core is SIGKILLed: its ends of the pipes close
    ack_in.close()
    r.inbox.extend([(1, i, 1, "aquafog/m1/tele/reading", b"{}", 0) for i in range(5)])
    r.wake.set()
    with caplog.at_level(logging.INFO, logger="aquafog.receiver"):
        r._forward()  # returns instead of raising BrokenPipeError
        assert r.stopping.is_set() and r.core_gone
        assert r._send(("rx", "disconnected", "x")) is False  # paho's on_disconnect after that: no traceback
        r._acks()  # EOF on the ack pipe: returns
    errors = [x for x in caplog.records if x.levelno >= logging.ERROR]
    assert len(errors) == 1 and "core process is gone" in errors[0].getMessage()
    assert "delivers it again" in errors[0].getMessage()


class FakeClient:
    def __init__(self):
        self.subscribed = []

    def subscribe(self, topics):
        self.subscribed.append(topics)


def test_each_connect_says_whether_the_broker_kept_the_session(pipes, caplog):
    rx_out, rx_in, ack_out, _ = pipes
    r = Receiver(SETTINGS, rx_in, ack_out)
    ok = SimpleNamespace(is_failure=False)
    c = FakeClient()
    with caplog.at_level(logging.INFO, logger="aquafog.receiver"):
        r._on_connect(c, None, SimpleNamespace(session_present=False), ok, None)  # a gateway's very first start
        r._on_connect(c, None, SimpleNamespace(session_present=True), ok, None)   # the broker kept it
        r._on_connect(c, None, SimpleNamespace(session_present=False), ok, None)  # the broker lost it
    msgs = [(x.levelname, x.getMessage()) for x in caplog.records]
    assert "new session" in msgs[0][1] and msgs[0][0] == "INFO"
    assert "session resumed" in msgs[1][1] and msgs[1][0] == "INFO"
    assert msgs[2][0] == "WARNING" and "kept no session" in msgs[2][1] and "meters send again" in msgs[2][1]
    assert [rx_out.recv() for _ in range(3)] == [("rx", "connected", 1), ("rx", "connected", 2),
                                                 ("rx", "connected", 3)]
    assert len(c.subscribed) == 3  # subscribed again every time: a lost session lost its subscriptions too
