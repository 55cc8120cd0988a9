"""`aquafog meter provision` and `aquafog broker-account add`: flags, the site file (and
which one when --site is not given), what they print, exit codes, the reload."""

from __future__ import annotations

import json
import stat
import sys
import tomllib

import pytest

from aquafog.cli import main as aquafog
from aquafog.provisioning import mosquitto, site


def provision(*args: str) -> int:
    return aquafog(["meter", "provision", *args])


def account(*args: str) -> int:
    return aquafog(["broker-account", "add", *args])


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
    assert provision("--count", "100", "--prefix", "n", "--site", str(site_file),
                     "--k-factor", "1", "--set", "report_interval_s=300") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [f"site file: {site_file} (--site)", "provisioned 100 meter(s): n0001, n0002, "
                                    "n0003, n0004, n0005, n0006, n0007, n0008 ... (100 in all)"]
    assert f"aquafog flash --site {site_file} /dev/ttyUSB0 n0001" in out
    assert "make flash PORT=/dev/ttyUSB0 METER=n0001" in out
    assert "sudo systemctl reload mosquitto" in out
    cfg = json.loads((fog.meters_dir / "n0100" / "config.json").read_text())
    assert (cfg["k_factor"], cfg["report_interval_s"]) == (1, 300)  # flags beat the site file
    assert password_ok(fog.passwd_file, "n0100", cfg["mqtt_password"])
    assert cfg["mqtt_password"] not in out  # meters' passwords stay in their files


def test_ids_from_a_file_and_the_arguments(fog, site_file, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("m0002\n# later: m0003\n")
    assert provision("m0001", "--ids-file", str(ids), "--site", str(site_file)) == 0
    assert sorted(p.name for p in fog.meters_dir.iterdir() if p.is_dir()) == ["m0001", "m0002"]


def test_refusal_exit_code_and_message(fog, site_file, capsys):
    assert provision("m1", "--site", str(site_file)) == 0
    capsys.readouterr()
    assert provision("m1", "--site", str(site_file)) == 1
    err = capsys.readouterr().err
    assert err.startswith("aquafog meter provision: 1 meter(s) cannot be provisioned:\n")
    assert f"meter m1 is already provisioned: {fog.meters_dir / 'm1' / 'config.json'}" in err
    assert provision("m1", "--site", str(site_file), "--rotate-password") == 0
    assert "new password for 1 meter(s): m1" in capsys.readouterr().out


def test_firmware_errors_are_printed_as_key_problem(site_file, capsys):
    assert provision("m1", "--site", str(site_file), "--k-factor", "0", "--wifi-ssid", "") == 1
    err = capsys.readouterr().err.splitlines()
    assert "  wifi_ssid: must not be empty" in err
    assert "  k_factor: must be a number of pulses per litre, > 0 and <= 1000000, got 0" in err


def test_service_password_is_printed_once_as_gateway_toml_lines(fog, site_file, capsys, password_ok):
    assert account("gateway", "--site", str(site_file)) == 0
    out = capsys.readouterr().out
    assert "service account 'gateway' on the fog broker (role gateway: the fog gateway" in out
    assert "into gateway.toml" in out
    snippet = out[out.index("# broker account"):]
    creds = tomllib.loads(snippet)
    assert creds["mqtt_username"] == "gateway"
    assert password_ok(fog.passwd_file, "gateway", creds["mqtt_password"])
    assert out.count(creds["mqtt_password"]) == 1


def test_service_password_to_a_file(fog, site_file, tmp_path, capsys):
    out_file = tmp_path / "gw-secret.toml"
    assert account("gateway", "--site", str(site_file), "--password-out", str(out_file)) == 0
    out = capsys.readouterr().out
    creds = tomllib.loads(out_file.read_text())
    assert creds["mqtt_password"] not in out
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600


def test_missing_settings_are_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert provision("m1") == 1
    err = capsys.readouterr().err
    assert "passwd_file: required" in err and "acl_file: required" in err


# -- which site file, without --site ------------------------------------------------------------
def test_aquafog_site_names_the_site_file(fog, site_file, capsys, monkeypatch):
    monkeypatch.setenv("AQUAFOG_SITE", str(site_file))
    assert provision("m1") == 0
    assert capsys.readouterr().out.startswith(f"site file: {site_file} (AQUAFOG_SITE)\n")
    assert (fog.meters_dir / "m1" / "config.json").exists()


def test_an_installed_fogs_site_file_is_the_default(fog, site_file, capsys, monkeypatch):
    monkeypatch.setattr(site, "SYSTEM_SITE_FILE", site_file)
    assert account("gateway") == 0
    assert capsys.readouterr().out.startswith(f"site file: {site_file} (the installed fog's)\n")
    assert "user gateway" in fog.acl_file.read_text().splitlines()


def test_site_flag_beats_the_environment_and_an_empty_one_means_none(fog, site_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(site, "SYSTEM_SITE_FILE", site_file)
    monkeypatch.setenv("AQUAFOG_SITE", str(tmp_path / "elsewhere.toml"))  # does not exist: never read
    assert provision("m1", "--site", str(site_file)) == 0
    assert capsys.readouterr().out.startswith(f"site file: {site_file} (--site)\n")
    monkeypatch.setenv("AQUAFOG_SITE", "")
    assert provision("m2") == 1  # no site file at all: the broker's files are not known
    assert "passwd_file: required" in capsys.readouterr().err


def test_an_aquafog_site_that_does_not_exist_is_an_error(fog, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AQUAFOG_SITE", str(tmp_path / "nope.toml"))
    assert provision("m1") == 1
    assert f"AQUAFOG_SITE={tmp_path / 'nope.toml'}: no such site file" in capsys.readouterr().err


# -- the reload --------------------------------------------------------------------------------
@pytest.fixture
def systemd(tmp_path, monkeypatch):
    """A systemd that runs Mosquitto: its runtime folder, and a systemctl that logs its
    arguments and answers `is-active` with $ACTIVE (0 or 3, as systemctl does)."""
    (tmp_path / "run-systemd").mkdir()
    log = tmp_path / "systemctl.log"
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!{sys.executable}\nimport os, sys\n"
                    f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    "sys.exit(int(os.environ.get('ACTIVE', '0')) if sys.argv[1] == 'is-active' else 0)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(mosquitto, "SYSTEMD_RUNTIME_DIR", tmp_path / "run-systemd")
    monkeypatch.setattr(mosquitto, "SYSTEMCTL", str(fake))
    return log


def test_a_mosquitto_that_systemd_runs_is_reloaded(fog, site_file, systemd, capsys):
    assert provision("m1", "--site", str(site_file)) == 0
    assert systemd.read_text().splitlines() == ["is-active --quiet mosquitto", "reload mosquitto"]
    assert "Mosquitto reloaded its password and ACL files (systemctl reload mosquitto)" in capsys.readouterr().out
    assert account("gateway", "--site", str(site_file)) == 0
    assert systemd.read_text().splitlines()[-1] == "reload mosquitto"


def test_no_reload_when_the_service_is_not_active_or_when_told_not_to(fog, site_file, systemd, capsys, monkeypatch):
    assert provision("m1", "--site", str(site_file), "--no-reload") == 0
    assert not systemd.exists()
    monkeypatch.setenv("ACTIVE", "3")
    assert provision("m2", "--site", str(site_file)) == 0
    assert systemd.read_text().splitlines() == ["is-active --quiet mosquitto"]
    assert "make Mosquitto reload its password and ACL files: `sudo systemctl reload mosquitto`" in \
        capsys.readouterr().out


def test_without_systemd_nothing_is_asked_of_systemctl(fog, site_file, systemd, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mosquitto, "SYSTEMD_RUNTIME_DIR", tmp_path / "not-booted-with-systemd")
    assert provision("m1", "--site", str(site_file)) == 0
    assert not systemd.exists()
    assert "sudo systemctl reload mosquitto" in capsys.readouterr().out


# -- accounts on the cloud broker --------------------------------------------------------------
def test_a_fogs_bridge_account_is_named_after_its_region(tmp_path, capsys, password_ok):
    passwd, acl_file = tmp_path / "cloud.passwd", tmp_path / "cloud.acl"
    assert account("--region", "north", "--passwd-file", str(passwd), "--acl-file", str(acl_file)) == 0
    out = capsys.readouterr().out
    assert "service account 'fog-north' on the cloud broker (role fog, region north:" in out
    creds = tomllib.loads(out[out.index("# broker account"):])
    assert creds["remote_username"] == "fog-north"
    assert password_ok(passwd, "fog-north", creds["remote_password"])
    assert "pattern" not in acl_file.read_text()  # the cloud broker has no meters
    assert account("--role", "fog", "--passwd-file", str(passwd), "--acl-file", str(acl_file)) == 1
    assert "role fog: which region?" in capsys.readouterr().err
