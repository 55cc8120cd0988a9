"""`tools/provision.py`: flags, the site file, what it prints, exit codes."""

from __future__ import annotations

import json
import stat
import tomllib

import pytest

import provision


@pytest.fixture
def site_file(fog, tmp_path):
    f = tmp_path / "site.toml"
    f.write_text(f'''wifi_ssid = "pumphouse"
broker_host = "192.168.1.10"
db = "{fog.db}"
passwd_file = "aquafog.passwd"
acl_file = "aquafog.acl"
meters_dir = "meters"

[meter]
k_factor = 450
''')
    return f


def test_a_hundred_meters_with_one_command(fog, site_file, capsys, password_ok):
    assert provision.main(["meter", "--count", "100", "--prefix", "n", "--site", str(site_file),
                           "--k-factor", "1", "--set", "report_interval_s=300"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("provisioned 100 meter(s): n0001, n0002,")
    assert "make flash PORT=/dev/ttyUSB0 METER=n0001" in out
    assert "sudo systemctl reload mosquitto" in out
    cfg = json.loads((fog.meters_dir / "n0100" / "config.json").read_text())
    assert (cfg["k_factor"], cfg["report_interval_s"]) == (1, 300)  # flags beat the site file
    assert password_ok(fog.passwd_file, "n0100", cfg["mqtt_password"])
    assert cfg["mqtt_password"] not in out  # meters' passwords stay in their files


def test_ids_from_a_file_and_the_arguments(fog, site_file, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("m0002\n# later: m0003\n")
    assert provision.main(["meter", "m0001", "--ids-file", str(ids), "--site", str(site_file)]) == 0
    assert sorted(p.name for p in fog.meters_dir.iterdir() if p.is_dir()) == ["m0001", "m0002"]


def test_refusal_exit_code_and_message(fog, site_file, capsys):
    assert provision.main(["meter", "m1", "--site", str(site_file)]) == 0
    capsys.readouterr()
    assert provision.main(["meter", "m1", "--site", str(site_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("provision.py meter: 1 meter(s) cannot be provisioned:\n")
    assert f"meter m1 is already provisioned: {fog.meters_dir / 'm1' / 'config.json'}" in err
    assert provision.main(["meter", "m1", "--site", str(site_file), "--rotate-password"]) == 0
    assert "new password for 1 meter(s): m1" in capsys.readouterr().out


def test_firmware_errors_are_printed_as_key_problem(site_file, capsys):
    assert provision.main(["meter", "m1", "--site", str(site_file), "--k-factor", "0", "--wifi-ssid", ""]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "  wifi_ssid: must not be empty" in err
    assert "  k_factor: must be a number of pulses per litre, > 0 and <= 1000000, got 0" in err


def test_service_password_is_printed_once_as_gateway_toml_lines(fog, site_file, capsys, password_ok):
    assert provision.main(["service", "gateway", "--site", str(site_file)]) == 0
    out = capsys.readouterr().out
    snippet = out[out.index("# broker account"):]
    creds = tomllib.loads(snippet)
    assert creds["mqtt_username"] == "gateway"
    assert password_ok(fog.passwd_file, "gateway", creds["mqtt_password"])
    assert out.count(creds["mqtt_password"]) == 1


def test_service_password_to_a_file(fog, site_file, tmp_path, capsys):
    out_file = tmp_path / "gw-secret.toml"
    assert provision.main(["service", "gateway", "--site", str(site_file), "--password-out", str(out_file)]) == 0
    out = capsys.readouterr().out
    creds = tomllib.loads(out_file.read_text())
    assert creds["mqtt_password"] not in out
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600


def test_missing_settings_are_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert provision.main(["meter", "m1"]) == 1
    err = capsys.readouterr().err
    assert "passwd_file: required" in err and "acl_file: required" in err
