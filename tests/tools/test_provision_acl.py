"""The ACL file: the README's meter patterns present exactly once, a `user` block per
service account with its role's topics, nothing an operator wrote lost, and a second
run changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning import ProvisionError, acl

README = Path(__file__).resolve().parents[2] / "README.md"


def pattern_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("pattern ")]


def test_meter_patterns_are_the_readme_ones_verbatim():
    readme = pattern_lines(README.read_text())
    assert len(readme) == 4
    assert pattern_lines(acl.ensure("", "aquafog")) == readme


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
        ("topic", "read", "aquafog/+/status"), ("topic", "write", "aquafog/+/cmnd/#")}
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
