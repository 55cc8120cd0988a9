"""Provisioning meters against real files: the real mosquitto_passwd, a real gateway
store, the firmware's own validator. What a run writes, what it refuses, rotation,
and that a failed run leaves nothing half-done."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from aquafog.provisioning import ProvisionError, acl, mosquitto, provisioner
from aquafog.provisioning.provisioner import provision_meters
from aquafog.store.engine import open_engine
from aquafog.store.schema import meters
from aquameter import config as firmware_config


def registered(db) -> dict:
    engine = open_engine(db, create=False)
    try:
        with engine.connect() as conn:
            return {r.meter: r.label for r in conn.execute(select(meters.c.meter, meters.c.label))}
    finally:
        engine.dispose()


def snapshot(fog) -> dict:
    """Everything a run may change."""
    out = {"db": registered(fog.db)}
    for p in (fog.passwd_file, fog.acl_file):
        out[p.name] = p.read_bytes() if p.exists() else None
    out["configs"] = sorted(str(p.relative_to(fog.meters_dir)) for p in fog.meters_dir.rglob("config.json")) \
        if fog.meters_dir.exists() else []
    return out


def load(fog, m) -> dict:
    return json.loads((fog.meters_dir / m / "config.json").read_text())


def test_a_provisioned_meter(fog, password_ok):
    run = provision_meters(replace(fog, meter={"k_factor": 1, "report_interval_s": 300}, label="Rua A"),
                           ["m0001", "m0002"])
    assert run.provisioned == ["m0001", "m0002"] and run.registered == ["m0001", "m0002"]
    for m in ("m0001", "m0002"):
        path = fog.meters_dir / m / "config.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        cfg = load(fog, m)
        # the firmware accepts it as it is, and the identity is the meter's own
        parsed, errors = firmware_config.validate(cfg)
        assert errors == []
        assert parsed["meter_id"] == m and parsed["mqtt_user"] == m and "mqtt_user" not in cfg
        assert (parsed["wifi_ssid"], parsed["broker_host"], parsed["k_factor"], parsed["report_interval_s"]) == \
            ("pumphouse", "192.168.1.10", 1, 300)
        assert len(cfg["mqtt_password"]) == 32
        assert password_ok(fog.passwd_file, m, cfg["mqtt_password"])
    assert load(fog, "m0001")["mqtt_password"] != load(fog, "m0002")["mqtt_password"]
    # registered at the gateway, as `aquafog meter add --label` does
    assert registered(fog.db) == {"m0001": "Rua A", "m0002": "Rua A"}
    # the ACL confines meters with the README's patterns
    assert fog.acl_file.read_text() == acl.ensure("", "aquafog")
    # the folder holding passwords ignores itself in git
    assert (fog.meters_dir / ".gitignore").read_text().splitlines()[-1] == "*"


def test_broker_files_are_created_readable_by_the_broker_only(fog):
    provision_meters(fog, ["m1"])
    for p in (fog.passwd_file, fog.acl_file):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o007 == 0, oct(mode)  # never world-readable
        if mode == 0o640:
            import grp
            assert grp.getgrgid(p.stat().st_gid).gr_name == "mosquitto"


def test_existing_password_file_keeps_its_users_and_mode(fog, password_ok):
    provision_meters(fog, ["m1"])
    os.chmod(fog.passwd_file, 0o600)
    pw1 = load(fog, "m1")["mqtt_password"]
    provision_meters(fog, ["m2"])
    assert password_ok(fog.passwd_file, "m1", pw1)  # -b, never -c: nobody is dropped
    assert stat.S_IMODE(fog.passwd_file.stat().st_mode) == 0o600


def test_refuses_an_existing_meter_and_changes_nothing(fog):
    provision_meters(fog, ["m1"])
    before = snapshot(fog)
    with pytest.raises(ProvisionError) as e:
        provision_meters(fog, ["m2", "m1"])
    text = str(e.value)
    assert f"meter m1 is already provisioned: {fog.meters_dir / 'm1' / 'config.json'}" in text
    assert "--rotate-password" in text and "--skip-existing" in text and "nothing was changed" in text
    assert snapshot(fog) == before  # not even m2


def test_skip_existing_finishes_a_batch(fog):
    provision_meters(fog, ["m1"])
    pw1 = load(fog, "m1")["mqtt_password"]
    run = provision_meters(fog, ["m1", "m2"], skip_existing=True)
    assert run.skipped == ["m1"] and run.provisioned == ["m2"]
    assert load(fog, "m1")["mqtt_password"] == pw1


def test_rotation_changes_config_and_password_file_together(fog, password_ok):
    provision_meters(replace(fog, meter={"k_factor": 0.1}), ["m1", "m2"])
    old = load(fog, "m1")
    other = load(fog, "m2")["mqtt_password"]
    # a site file edited since (another k-factor) must not leak into the rotated meter
    run = provision_meters(replace(fog, meter={"k_factor": 450}), ["m1"], rotate=True)
    assert run.rotated == ["m1"] and run.provisioned == []
    new = load(fog, "m1")
    assert new["mqtt_password"] != old["mqtt_password"]
    assert {**new, "mqtt_password": None} == {**old, "mqtt_password": None}
    assert password_ok(fog.passwd_file, "m1", new["mqtt_password"])
    assert not password_ok(fog.passwd_file, "m1", old["mqtt_password"])
    assert password_ok(fog.passwd_file, "m2", other)
    assert stat.S_IMODE((fog.meters_dir / "m1" / "config.json").stat().st_mode) == 0o600


def test_rotating_an_unknown_meter_is_refused(fog):
    with pytest.raises(ProvisionError, match="meter m9 is not provisioned yet"):
        provision_meters(fog, ["m9"], rotate=True)


def test_an_account_without_a_config_here_is_not_overwritten(fog, password_ok):
    provision_meters(fog, ["m1"])
    pw = load(fog, "m1")["mqtt_password"]
    (fog.meters_dir / "m1" / "config.json").unlink()  # provisioned from another checkout
    with pytest.raises(ProvisionError, match="has a broker account .* but no .*another checkout") as e:
        provision_meters(fog, ["m1"], skip_existing=True)
    assert "--rotate-password" in e.value.hint
    assert password_ok(fog.passwd_file, "m1", pw)
    provision_meters(fog, ["m1"], rotate=True)
    assert password_ok(fog.passwd_file, "m1", load(fog, "m1")["mqtt_password"])


def test_firmware_errors_all_at_once_before_any_change(fog):
    before = snapshot(fog)
    bad = replace(fog, wifi_ssid=None, broker_port=70000, meter={"k_factor": -1, "relay_pin": 4, "colour": "red"})
    with pytest.raises(ProvisionError) as e:
        provision_meters(bad, ["m1", "m2"])
    assert "rejected by the meter firmware" in e.value.message
    # the firmware's own words, each once for the whole batch
    assert sorted(e.value.details) == sorted([
        "colour: unknown key",
        "wifi_ssid: required",
        "broker_port: must be an integer 1..65535, got 70000",
        "relay_pin: must differ from pulse_pin",
        "k_factor: must be a number of pulses per litre, > 0 and <= 1000000, got -1",
    ])
    assert snapshot(fog) == before


def test_invalid_ids_are_refused_before_anything(fog):
    with pytest.raises(ProvisionError) as e:
        provision_meters(fog, ["ok", "Bad", "ok"])
    assert e.value.details == [
        "meter id 'Bad': must be 1-32 characters of a-z 0-9 _ -, starting with a letter or digit",
        "meter id 'ok': given more than once"]
    assert not fog.passwd_file.exists() and not fog.acl_file.exists()


def test_a_service_account_name_is_not_a_meter_id(fog):
    fog.acl_file.write_text(acl.ensure("", "aquafog", {"gateway": "gateway"}))
    with pytest.raises(ProvisionError, match=r"gateway: is a service account \(`user gateway`"):
        provision_meters(fog, ["gateway"], rotate=True)


def test_missing_mosquitto_passwd_says_how_to_install_it(fog, monkeypatch):
    monkeypatch.setattr(mosquitto.shutil, "which", lambda name: None)
    monkeypatch.setattr(mosquitto, "PASSWD_TOOL_PATHS", ())
    with pytest.raises(ProvisionError) as e:
        provision_meters(fog, ["m1"])
    assert e.value.message == "mosquitto_passwd not found"
    assert "sudo apt-get install mosquitto" in e.value.hint
    assert not fog.passwd_file.exists()


def test_a_failing_mosquitto_passwd_leaves_no_config_and_the_rerun_finishes(fog, tmp_path, monkeypatch):
    real = mosquitto.find_passwd_tool()
    flaky = tmp_path / "flaky_passwd"
    # succeeds once, then fails (a full disk, say)
    flaky.write_text(f"#!/bin/sh\nif [ -e {tmp_path}/once ]; then echo 'Error: disk full' >&2; exit 1; fi\n"
                     f"touch {tmp_path}/once\nexec {real} \"$@\"\n")
    flaky.chmod(0o755)
    monkeypatch.setattr(mosquitto, "find_passwd_tool", lambda: str(flaky))
    with pytest.raises(ProvisionError) as e:
        provision_meters(fog, ["m1", "m2", "m3"])
    text = str(e.value)
    assert "could not set the password of 'm2'" in text and "Error: disk full" in text
    assert "meter(s) m1 provisioned" in text and "--skip-existing" in text
    assert (fog.meters_dir / "m1" / "config.json").exists()
    assert not (fog.meters_dir / "m2" / "config.json").exists()
    assert list((fog.meters_dir / "m2").iterdir()) == []  # no temporary file left behind
    monkeypatch.undo()
    run = provision_meters(fog, ["m1", "m2", "m3"], skip_existing=True)
    assert run.skipped == ["m1"] and run.provisioned == ["m2", "m3"]
    assert set(registered(fog.db)) == {"m1", "m2", "m3"}


def test_a_typo_in_the_store_path_is_not_a_new_store(fog, tmp_path):
    with pytest.raises(ProvisionError, match="store .*gatway.db does not exist") as e:
        provision_meters(replace(fog, db=tmp_path / "gatway.db"), ["m1"])
    assert "aquafog init-db" in e.value.hint
    assert not (tmp_path / "gatway.db").exists()


def test_registration_through_the_gateway_config(fog, tmp_path):
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'db_path = "{fog.db}"\n')
    provision_meters(replace(fog, db=None, gateway_config=conf), ["m1"])
    assert set(registered(fog.db)) == {"m1"}


def test_gateway_config_with_another_topic_root_is_refused(fog, tmp_path):
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'db_path = "{fog.db}"\ntopic_root = "city"\n')
    with pytest.raises(ProvisionError, match="topic_root: the gateway .* uses 'city', the meters would use 'aquafog'"):
        provision_meters(replace(fog, db=None, gateway_config=conf), ["m1"])


def test_a_broken_gateway_config_lists_its_errors(fog, tmp_path):
    conf = tmp_path / "gateway.toml"
    conf.write_text('db_path = "x.db"\nmqtt_port = 0\nflavour = 1\n')
    with pytest.raises(ProvisionError) as e:
        provision_meters(replace(fog, db=None, gateway_config=conf), ["m1"])
    assert any(d.startswith("flavour: unknown key") for d in e.value.details)
    assert any(d.startswith("mqtt_port: must be between 1 and 65535") for d in e.value.details)


def test_no_gateway_given(fog):
    with pytest.raises(ProvisionError, match="no gateway to register the meters with") as e:
        provision_meters(replace(fog, db=None), ["m1"])
    assert "--gateway-config" in e.value.hint


def test_reload_pid_must_be_a_mosquitto(fog):
    with pytest.raises(ProvisionError, match=f"--reload-pid {os.getpid()}: that process is .*not mosquitto"):
        provision_meters(fog, ["m1"], reload_pid=os.getpid())
    assert not (fog.meters_dir / "m1" / "config.json").exists()  # checked before any change


def test_a_concurrent_run_is_refused(fog):
    import fcntl
    fd = os.open(fog.passwd_file.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ProvisionError, match="another provisioning run is using it"):
            provision_meters(fog, ["m1"])
    finally:
        os.close(fd)
    provision_meters(fog, ["m1"])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as `sudo aquafog meter provision` has")
def test_under_sudo_the_meters_files_belong_to_the_technician(fog, monkeypatch):
    monkeypatch.setenv("SUDO_UID", "4321")
    monkeypatch.setenv("SUDO_GID", "4322")
    provision_meters(fog, ["m1"])
    for p in (fog.meters_dir, fog.meters_dir / ".gitignore", fog.meters_dir / "m1",
              fog.meters_dir / "m1" / "config.json"):
        assert (p.stat().st_uid, p.stat().st_gid) == (4321, 4322), p
    assert fog.passwd_file.stat().st_uid == 0  # the broker's files stay root's


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as `sudo aquafog meter provision` has")
def test_as_root_the_gateways_store_is_written_by_its_owner(fog, monkeypatch):
    """An installed fog's store belongs to the gateway's user: registering as root must not
    leave it root-owned files the gateway cannot open, so the registration runs as that user.
    (SQLite itself hands a -wal made by root to the database's owner and removes it at
    close, so the files alone would not tell: the registration says who ran it.)"""
    import importlib
    import pwd
    import shutil

    importlib.import_module("sqlite3")  # before the switch to `nobody`, who may not read this Python's folder

    real = provisioner._register

    def register_and_say_who(db, ids, label):
        (db.parent / "registered-by").write_text(str(os.geteuid()))
        return real(db, ids, label)

    monkeypatch.setattr(provisioner, "_register", register_and_say_who)
    nobody = pwd.getpwnam("nobody")
    root = Path(tempfile.mkdtemp(prefix="aquafog-store-"))
    try:
        os.chmod(root, 0o711)
        store = root / "var-lib-aquafog"
        store.mkdir(mode=0o750)
        open_engine(store / "gateway.db").dispose()
        for p in [store, *store.iterdir()]:
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        run = provision_meters(replace(fog, db=store / "gateway.db"), ["m1"])
        assert run.registered == ["m1"] and set(registered(store / "gateway.db")) == {"m1"}
        assert (store / "registered-by").read_text() == str(nobody.pw_uid)
        assert {p.name: p.stat().st_uid for p in store.iterdir()} == \
            {"gateway.db": nobody.pw_uid, "registered-by": nobody.pw_uid}
    finally:
        shutil.rmtree(root)
