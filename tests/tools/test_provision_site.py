"""Site settings: defaults < site file (TOML or JSON) < flags; every error at once;
every key documented, with its default, in the doc that holds the site file's table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aquafog.provisioning import ProvisionError, site

ROOT = Path(__file__).resolve().parents[2]
# Where the site file's keys may be documented: the user's guide, else the tools' README.
SITE_DOCS = (ROOT / "docs" / "meters.md", ROOT / "tools" / "README.md")

SITE_TOML = """
wifi_ssid = "pumphouse"
wifi_password = "s3cret"
broker_host = "192.168.1.10"
gateway_config = "gateway.toml"
passwd_file = "broker/aquafog.passwd"
acl_file = "/etc/mosquitto/aquafog.acl"
label = "North"

[meter]
k_factor = 1
report_interval_s = 300
"""


def test_defaults():
    s = site.load(None, {})
    assert (s.wifi_password, s.broker_port, s.topic_root) == ("", 1883, "aquafog")
    assert s.meters_dir == Path(__file__).resolve().parents[2] / "firmware" / "meters"
    assert s.passwd_file is None and s.meter == {}


def test_toml_site_file_paths_are_relative_to_it(tmp_path, monkeypatch):
    f = tmp_path / "sites" / "north.toml"
    f.parent.mkdir()
    f.write_text(SITE_TOML)
    monkeypatch.chdir(tmp_path)
    s = site.load(f, {})
    assert s.wifi_ssid == "pumphouse" and s.label == "North"
    assert s.gateway_config == tmp_path / "sites" / "gateway.toml"
    assert s.passwd_file == tmp_path / "sites" / "broker" / "aquafog.passwd"
    assert s.acl_file == Path("/etc/mosquitto/aquafog.acl")
    assert s.meter_settings() == {"wifi_ssid": "pumphouse", "wifi_password": "s3cret", "broker_host": "192.168.1.10",
                                  "broker_port": 1883, "topic_root": "aquafog", "k_factor": 1,
                                  "report_interval_s": 300}


def test_json_site_file(tmp_path):
    f = tmp_path / "site.json"
    f.write_text(json.dumps({"wifi_ssid": "x", "broker_port": 8883, "meter": {"valve_default": "closed"}}))
    s = site.load(f, {})
    assert s.broker_port == 8883 and s.meter == {"valve_default": "closed"}


def test_flags_beat_the_site_file(tmp_path, monkeypatch):
    f = tmp_path / "site.toml"
    f.write_text(SITE_TOML)
    monkeypatch.chdir(tmp_path)
    s = site.load(f, {"wifi_ssid": "other", "broker_port": 1884, "passwd_file": "p", "db": None,
                      "meter": {"k_factor": 450}})
    assert s.wifi_ssid == "other" and s.broker_port == 1884
    assert s.passwd_file == Path("p")  # a flag's path is relative to the current directory
    assert s.meter == {"k_factor": 450, "report_interval_s": 300}
    assert s.label == "North"  # not given as a flag: the site file's value


def test_every_site_error_at_once(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text('wifi_sid = "typo"\npasswd_file = ""\nmeter = 3\nlabel = 5\n')
    with pytest.raises(ProvisionError) as e:
        site.load(f, {})
    assert e.value.details == [
        "wifi_sid: unknown key (known: " + ", ".join(site.SITE_KEYS) + ")",
        "passwd_file: must be a path (a non-empty string), got ''",
        "meter: must be a table of config.json keys, got 3",
        "label: must be a string, got 5",
    ]
    assert "nothing was changed" in e.value.hint


def test_the_tool_owns_identity_keys(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text('[meter]\nmqtt_password = "default"\nmqtt_user = "shared"\nwifi_ssid = "x"\n')
    with pytest.raises(ProvisionError) as e:
        site.load(f, {})
    assert e.value.details == [
        "meter.mqtt_password: set by the provisioning tool for each meter; remove it",
        "meter.mqtt_user: set by the provisioning tool for each meter; remove it",
        "meter.wifi_ssid: give it at the top level of the site file (or as --wifi-ssid)",
    ]


def test_bad_site_files(tmp_path):
    with pytest.raises(ProvisionError, match="cannot read the site file"):
        site.load(tmp_path / "nope.toml", {})
    (tmp_path / "bad.toml").write_text("wifi_ssid = \n")
    with pytest.raises(ProvisionError, match="not valid TOML"):
        site.load(tmp_path / "bad.toml", {})
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ProvisionError, match="must be a table of keys"):
        site.load(tmp_path / "bad.json", {})


def test_require_names_every_missing_setting():
    with pytest.raises(ProvisionError) as e:
        site.require(site.load(None, {}), ("passwd_file", "acl_file"))
    assert [d.split(":")[0] for d in e.value.details] == ["passwd_file", "acl_file"]
    assert "--passwd-file, or passwd_file in the site file" in e.value.details[0]


@pytest.mark.parametrize("text, expected", [
    ("k_factor=450", ("k_factor", 450)), ("k_factor=0.1", ("k_factor", 0.1)),
    ("relay_active_high=false", ("relay_active_high", False)), ("valve_default=closed", ("valve_default", "closed")),
    ('wifi_ssid="a b"', ("wifi_ssid", "a b")), ("x=", ("x", "")),
])
def test_set_values_are_json_or_text(text, expected):
    assert site.parse_assignment(text) == expected


def test_set_needs_key_and_value():
    with pytest.raises(ProvisionError, match="must be KEY=VALUE"):
        site.parse_assignment("k_factor")


def site_file_section(text: str) -> str | None:
    """The section under a "Site file" heading, up to the next heading of its level or above."""
    head = re.search(r"^(#+) Site file\b.*$", text, re.M)
    if head is None:
        return None
    end = re.search(rf"^#{{1,{len(head.group(1))}}} ", text[head.end():], re.M)
    return text[head.end():head.end() + end.start() if end else len(text)]


def test_every_site_key_is_documented_with_its_default():
    sections = [(doc, site_file_section(doc.read_text())) for doc in SITE_DOCS if doc.exists()]
    doc, section = next(((d, s) for d, s in sections if s and "| `wifi_ssid` |" in s), (None, None))
    assert section, f"no 'Site file' section with the keys' table in {', '.join(map(str, SITE_DOCS))}"
    for key, (default, _) in site.SITE_KEYS.items():
        row = re.search(rf"^\| `{key}` \|([^|]*)\|", section, re.M)
        assert row, f"{doc} 'Site file' has no row for site key {key!r}"
        if default not in (None, {}):
            assert str(default) in row.group(1), (key, row.group(0))


def test_the_service_listeners_files_come_in_pairs_and_apart_from_the_meters(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text('passwd_file = "meters.passwd"\nacl_file = "meters.acl"\nservices_passwd_file = "services.passwd"\n')
    with pytest.raises(ProvisionError) as e:
        site.load(f, {})
    assert e.value.details == ["services_passwd_file, services_acl_file: give both or neither (the service "
                               "listener's own password and ACL files)"]
    f.write_text('passwd_file = "meters.passwd"\nacl_file = "meters.acl"\n'
                 'services_passwd_file = "meters.passwd"\nservices_acl_file = "services.acl"\n')
    with pytest.raises(ProvisionError, match="services_passwd_file: is passwd_file too"):
        site.load(f, {})
    f.write_text('passwd_file = "meters.passwd"\nacl_file = "meters.acl"\n'
                 'services_passwd_file = "services.passwd"\nservices_acl_file = "services.acl"\n')
    s = site.load(f, {})
    assert s.service_files == (tmp_path / "services.passwd", tmp_path / "services.acl")
    assert site.load(None, {"passwd_file": "p", "acl_file": "a"}).service_files == (Path("p"), Path("a"))


def test_which_site_file(tmp_path, monkeypatch):
    installed = tmp_path / "etc-site.toml"
    monkeypatch.setattr(site, "SYSTEM_SITE_FILE", installed)
    assert site.find_site_file(None) == (None, f"none given, no {installed}")
    installed.write_text("")
    assert site.find_site_file(None) == (installed, "the installed fog's")
    mine = tmp_path / "mine.toml"
    mine.write_text("")
    monkeypatch.setenv("AQUAFOG_SITE", str(mine))
    assert site.find_site_file(None) == (mine, "AQUAFOG_SITE")
    assert site.find_site_file("given.toml") == (Path("given.toml"), "--site")
    monkeypatch.setenv("AQUAFOG_SITE", "")
    assert site.find_site_file(None) == (None, "AQUAFOG_SITE is empty")
