"""The ACL file: the MQTT API's meter patterns (docs/mqtt-api.md) present exactly once, a
`user` block per service account with its role's topics, nothing an operator wrote lost,
and a second run changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub

from aquafog import bridge
from aquafog.provisioning import ProvisionError, acl

MQTT_API = Path(__file__).resolve().parents[2] / "docs" / "mqtt-api.md"


def pattern_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("pattern ")]


def test_meter_patterns_are_the_documented_ones_verbatim():
    documented = pattern_lines(MQTT_API.read_text())
    assert len(documented) == 4
    assert pattern_lines(acl.ensure("", "aquafog")) == documented


def test_empty_file_gets_a_header_and_the_patterns():
    assert acl.ensure("", "aquafog") == "\n".join(acl.HEADER + [
        "pattern write aquafog/%u/tele/#",
        "pattern write aquafog/%u/stat/#",
        "pattern write aquafog/%u/status",
        "pattern read  aquafog/%u/cmnd/#",
    ]) + "\n"


def test_ensure_is_idempotent():
    once = acl.ensure("", "aquafog", {"gateway": "gateway", "look": "observer"})
    assert acl.ensure(once, "aquafog", {"gateway": "gateway", "look": "observer"}) == once
    assert acl.ensure(once, "aquafog") == once


def test_patterns_written_differently_are_not_added_twice():
    text = "pattern   write  aquafog/%u/tele/#\npattern write aquafog/%u/stat/#\n" \
           "pattern write aquafog/%u/status\npattern read aquafog/%u/cmnd/#\n"
    assert acl.ensure(text, "aquafog") == text


def test_only_missing_patterns_are_added_and_operator_lines_stay():
    text = "# ops: read-only monitoring\nuser monitor\ntopic read $SYS/#\n\npattern write aquafog/%u/status\n"
    out = acl.ensure(text, "aquafog")
    assert out.endswith(text)  # kept, in order
    assert pattern_lines(out) == ["pattern write aquafog/%u/tele/#", "pattern write aquafog/%u/stat/#",
                                  "pattern read  aquafog/%u/cmnd/#", "pattern write aquafog/%u/status"]


def test_another_topic_root_gets_its_own_patterns():
    out = acl.ensure(acl.ensure("", "aquafog"), "city/north")
    assert "pattern write city/north/%u/tele/#" in out.splitlines()
    assert len(pattern_lines(out)) == 8


def test_gateway_role_block():
    out = acl.ensure("", "aquafog", {"gateway": "gateway"})
    lines = out.splitlines()
    i = lines.index("user gateway")
    assert lines[i + 1:] == [
        "topic read  aquafog/+/tele/#",
        "topic read  aquafog/+/stat/#",
        "topic read  aquafog/+/status",
        "topic write aquafog/+/cmnd/#",
        # its link to the cloud (gateway/cloudlink.py): partials out through the bridge, the
        # cloud's commands and the city's figures in; without them Mosquitto drops its connection
        "topic write aquafog-fog/summary/#",
        "topic read  aquafog-fog/cmnd/#",
        "topic read  aquafog-fog/city/#",
    ]
    assert acl.users(out) == {"gateway"}


def test_missing_topics_go_into_the_existing_block_not_a_new_one():
    text = acl.ensure("", "aquafog") + "\nuser gateway\ntopic read aquafog/+/tele/#\n\nuser monitor\ntopic read #\n"
    out = acl.ensure(text, "aquafog", {"gateway": "gateway"})
    lines = out.splitlines()
    assert lines.count("user gateway") == 1
    block = lines[lines.index("user gateway") + 1:lines.index("user monitor")]
    assert {tuple(b.split()) for b in block if b} == {
        ("topic", "read", "aquafog/+/tele/#"), ("topic", "read", "aquafog/+/stat/#"),
        ("topic", "read", "aquafog/+/status"), ("topic", "write", "aquafog/+/cmnd/#"),
        ("topic", "write", "aquafog-fog/summary/#"), ("topic", "read", "aquafog-fog/cmnd/#"),
        ("topic", "read", "aquafog-fog/city/#")}
    assert lines[-2:] == ["user monitor", "topic read #"]


def test_a_service_block_never_attaches_to_the_previous_user():
    text = "user monitor\ntopic read #"  # no trailing newline
    out = acl.ensure(text, "aquafog", {"gateway": "gateway"})
    lines = out.splitlines()
    assert lines[lines.index("topic read #") + 1] == ""
    assert "user gateway" in lines


def test_observer_role_reads_everything_writes_nothing():
    out = acl.ensure("", "aquafog", {"look": "observer"})
    lines = out.splitlines()
    assert lines[lines.index("user look") + 1:] == ["topic read  aquafog/#"]


def test_unknown_role():
    with pytest.raises(ProvisionError, match="unknown role 'admin'"):
        acl.ensure("", "aquafog", {"x": "admin"})


# -- the cloud broker's roles: topics checked against the ones aquafog.bridge builds ----------
def block(text: str, user: str) -> list[tuple[str, str]]:
    lines = text.splitlines()
    out = []
    for line in lines[lines.index(f"user {user}") + 1:]:
        if not line.startswith("topic "):
            break
        _, access, topic = line.split()
        out.append((access, topic))
    return out


def may(rules: list[tuple[str, str]], access: str, topic: str) -> bool:
    return any(a in (access, "readwrite") and topic_matches_sub(f, topic) for a, f in rules)


def test_the_cloud_and_fog_blocks():
    text = acl.ensure("", "aquafog", {"city": "cloud"}, patterns=False)
    assert block(text, "city") == [("read", "aquafog-city/fogs/+/summary/#"), ("write", "aquafog-city/fogs/+/cmnd/#"),
                                   ("readwrite", "aquafog-city/city/#")]
    assert pattern_lines(text) == []
    text = acl.ensure(text, "aquafog", {"fog-north": "fog"}, region="north", patterns=False)
    assert block(text, "fog-north") == [("write", "aquafog-city/fogs/north/summary/#"),
                                        ("read", "aquafog-city/fogs/north/cmnd/#"), ("read", "aquafog-city/city/#")]
    assert "# fog-north: one fog's bridge, on the cloud broker" in text and "(region north)" in text


FOG_NORTH = acl.ROLES["fog"].topics("aquafog", "north")
CLOUD = acl.ROLES["cloud"].topics("aquafog")


@pytest.mark.parametrize("rules, access, topic, allowed", [
    (FOG_NORTH, "write", bridge.cloud_summary_topic("north", "day", "2026-11-26"), True),
    (FOG_NORTH, "write", bridge.cloud_summary_topic("north", "month", "2026-11", "topk"), True),
    (FOG_NORTH, "write", bridge.cloud_summary_topic("south", "day", "2026-11-26"), False),
    (FOG_NORTH, "read", bridge.cloud_command_topic("north", "valve"), True),
    (FOG_NORTH, "read", bridge.cloud_command_topic("south", "valve"), False),
    (FOG_NORTH, "write", bridge.cloud_command_topic("north", "valve"), False),
    (FOG_NORTH, "read", bridge.city_topic("mean", "day"), True),
    (FOG_NORTH, "write", bridge.city_topic("mean", "day"), False),
    (CLOUD, "read", bridge.cloud_summary_topic("south", "day", "2026-11-26"), True),
    (CLOUD, "write", bridge.cloud_summary_topic("south", "day", "2026-11-26"), False),
    (CLOUD, "write", bridge.cloud_command_topic("south", "valve"), True),
    (CLOUD, "write", bridge.city_topic("mean", "day"), True),
    (CLOUD, "read", bridge.city_topic("mean", "day"), True),
    (CLOUD, "read", "aquafog/m0001/tele/reading", False),
])
def test_cloud_roles_cover_exactly_the_bridges_topics(rules, access, topic, allowed):
    assert may(rules, access, topic) == allowed


def test_the_fog_role_needs_a_valid_region_and_only_it_has_one():
    with pytest.raises(ProvisionError, match="role fog: which region"):
        acl.ensure("", "aquafog", {"fog-x": "fog"})
    with pytest.raises(ProvisionError, match="region: 'North!' must be"):
        acl.ensure("", "aquafog", {"fog-x": "fog"}, region="North!")
    with pytest.raises(ProvisionError, match="only the fog role has a region"):
        acl.ensure("", "aquafog", {"gateway": "gateway"}, region="north")


def test_a_file_without_meters_gets_no_patterns():
    out = acl.ensure("", "aquafog", {"gateway": "gateway"}, patterns=False)
    assert pattern_lines(out) == [] and acl.users(out) == {"gateway"}
