"""The fog's cloud link taking commands from the cloud (unit: a fake writer, the publish
captured; the whole path runs against real parts in tests/integration/test_city.py)."""

from __future__ import annotations

import json

from aquafog.config import GatewayConfig
from aquafog.federation import CloudCommand, encode_command
from aquafog.gateway.cloudlink import CloudLink
from aquafog.gateway.commands import UnknownMeter

NOW = 1_795_650_000.0


class FakeWriter:
    def __init__(self, known=("m1",)):
        self.known = known
        self.calls = []

    def submit_valve(self, meter, state, reason, command_id, origin="api"):
        if meter not in self.known:
            raise UnknownMeter(f"meter {meter!r} is not registered at this gateway")
        self.calls.append((meter, state, reason, command_id, origin))
        return {}, True


def link(writer):
    cl = CloudLink(GatewayConfig(region="north"), engine=None, writer=writer, clock=lambda: NOW)
    sent = []
    cl._publish = lambda topic, payload, retain: sent.append((topic, json.loads(payload), retain)) or True
    return cl, sent


def deliver(cl, cmd: CloudCommand) -> None:
    cl._inbox.append(encode_command(cmd))
    cl._take_commands()


def test_a_cloud_command_goes_into_the_fog_ledger_as_origin_cloud():
    w = FakeWriter()
    cl, sent = link(w)
    deliver(cl, CloudCommand("c1", "m1", "closed", "above the mean", int(NOW * 1000) + 60_000))
    assert w.calls == [("m1", "closed", "above the mean", "c1", "cloud")]
    assert sent == [] and "c1" in cl._commands  # its status goes up from the ledger, at the next tick


def test_an_expired_command_is_answered_expired_and_never_reaches_the_meter():
    w = FakeWriter()
    cl, sent = link(w)
    deliver(cl, CloudCommand("c2", "m1", "closed", None, int(NOW * 1000) - 1))
    assert w.calls == []
    ((topic, status, retain),) = sent
    assert topic == "aquafog-fog/summary/command/c2" and not retain
    assert (status["status"], status["region"], status["meter"]) == ("expired", "north", "m1")


def test_a_command_for_a_meter_this_fog_does_not_have_is_rejected_with_the_reason():
    cl, sent = link(FakeWriter(known=()))
    deliver(cl, CloudCommand("c3", "m9", "open", None, int(NOW * 1000) + 60_000))
    ((_, status, _),) = sent
    assert status["status"] == "rejected" and "not registered" in status["error"]


def test_a_malformed_command_is_counted_and_changes_nothing():
    w = FakeWriter()
    cl, sent = link(w)
    cl._inbox.append(b'{"v":1,"id":"c4","meter":"m1","state":"ajar","expires_ms":1}')
    cl._take_commands()
    assert cl.rejected == 1 and w.calls == [] and sent == []


def test_a_cloud_command_may_not_pose_as_a_meters_own_change():
    w = FakeWriter()
    cl, sent = link(w)
    deliver(cl, CloudCommand("local-0badc0de-1", "m1", "closed", None, int(NOW * 1000) + 60_000))
    assert cl.rejected == 1 and w.calls == [] and sent == []


class FakeEnforcer:
    def __init__(self):
        self.offered = []

    def offer_city(self, p):
        self.offered.append(p)

    def summary(self):
        return {"mode": "off", "source": "config", "updated_ms": 0, "over": 0, "blocked": 0}


class Msg:
    def __init__(self, topic, payload):
        self.topic, self.payload = topic, payload


def test_the_citys_policy_goes_to_the_enforcer_and_a_bad_one_is_counted():
    from aquafog.federation import CityPolicy, encode_city_policy
    from aquafog.policy import PolicySettings
    enforcer = FakeEnforcer()
    cl = CloudLink(GatewayConfig(region="north"), engine=None, writer=FakeWriter(), clock=lambda: NOW,
                   policy=enforcer)
    p = CityPolicy(PolicySettings(mode="enforce", mean_factor=1.5), 42)
    cl._on_message(None, None, Msg("aquafog-fog/city/policy", encode_city_policy(p)))
    assert enforcer.offered == [p]
    cl._on_message(None, None, Msg("aquafog-fog/city/policy", b'{"v":1,"settings":{"mode":"on"},"ts_ms":1}'))
    assert enforcer.offered == [p] and cl.rejected == 1
