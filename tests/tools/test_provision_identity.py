"""Meter ids follow the MQTT API rule (the same in the tool, the gateway and the
firmware); passwords are random, at least 128 bits, never a default."""

from __future__ import annotations

import math

import pytest

from aquafog.protocol import METER_ID_RE
from aquameter.config import valid_meter_id
from aquafog.provisioning import ProvisionError, identity

CASES = [
    ("m0001", True), ("a", True), ("0", True), ("a" * 32, True), ("m_1-x", True), ("9-z", True),
    ("", False), ("a" * 33, False), ("M1", False), ("_m1", False), ("-m1", False), ("m 1", False),
    ("m/1", False), ("m+", False), ("m#", False), ("mé", False), ("m.1", False), ("m:1", False),
]


@pytest.mark.parametrize("name, ok", CASES)
def test_meter_id_rule_is_the_mqtt_api_rule_everywhere(name, ok):
    assert (identity.name_problems([name]) == []) is ok
    assert bool(METER_ID_RE.fullmatch(name)) is ok          # the gateway
    assert valid_meter_id(name) is ok                       # the firmware


def test_name_problems_lists_every_bad_and_repeated_id():
    problems = identity.name_problems(["m1", "M2", "m1", "", "ok"])
    assert problems == [
        "meter id 'M2': must be 1-32 characters of a-z 0-9 _ -, starting with a letter or digit",
        "meter id 'm1': given more than once",
        "meter id '': must be 1-32 characters of a-z 0-9 _ -, starting with a letter or digit",
    ]


def test_sequence_names_like_the_emulator():
    assert identity.sequence(3) == ["m0001", "m0002", "m0003"]
    assert identity.sequence(2, prefix="north-", start=99) == ["north-0099", "north-0100"]
    assert identity.sequence(1, start=12345) == ["m12345"]
    with pytest.raises(ProvisionError, match="--count must be at least 1"):
        identity.sequence(0)


def test_ids_file_ignores_blank_lines_and_comments(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("# street 1\nm0001\n\n  m0002  # corner house\n")
    assert identity.read_ids_file(f) == ["m0001", "m0002"]
    with pytest.raises(ProvisionError, match="cannot read the id file"):
        identity.read_ids_file(tmp_path / "missing.txt")


def test_passwords_are_random_long_and_plain():
    pws = {identity.new_password() for _ in range(200)}
    assert len(pws) == 200
    for pw in pws:
        assert len(pw) == identity.PASSWORD_LENGTH and pw.isalnum() and pw.isascii()
    assert identity.password_bits() >= 128
    assert identity.password_bits() == pytest.approx(32 * math.log2(62))
    # every symbol of the alphabet shows up: no accidental narrowing of the alphabet
    assert set("".join(pws)) == set(identity.PASSWORD_ALPHABET)
