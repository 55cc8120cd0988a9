"""Provisioning meters for MQTT over TLS: the config.json keys (checked by the firmware's
validator), the CA (and, for mutual TLS, each meter's own certificate and key) next to
config.json, what is refused before any change."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from aquafog.provisioning import ProvisionError
from aquafog.provisioning import tls as devca
from aquafog.provisioning.provisioner import provision_meters
from aquameter import config as firmware_config


@pytest.fixture
def ca(tmp_path) -> Path:
    d = tmp_path / "certs"
    devca.make_ca(d)
    return d


def load(fog, m) -> dict:
    return json.loads((fog.meters_dir / m / "config.json").read_text())


def test_a_tls_meter_gets_the_keys_and_the_ca_next_to_its_config(fog, ca):
    run = provision_meters(replace(fog, broker_port=8883, tls_ca=ca / "ca.crt", tls_hostname="fog1.lan"), ["m0001"])
    assert run.provisioned == ["m0001"]
    cfg = load(fog, "m0001")
    parsed, errors = firmware_config.validate(cfg)
    assert errors == []
    assert (parsed["mqtt_tls"], parsed["mqtt_cafile"], parsed["mqtt_tls_hostname"], parsed["broker_port"]) == (
        True, "ca.crt", "fog1.lan", 8883)
    assert parsed["mqtt_certfile"] is None and "mqtt_certfile" not in cfg
    d = fog.meters_dir / "m0001"
    assert (d / "ca.crt").read_bytes() == (ca / "ca.crt").read_bytes()
    assert sorted(p.name for p in d.iterdir()) == ["ca.crt", "config.json"]


def test_mutual_tls_issues_each_meter_its_own_certificate(fog, ca):
    provision_meters(replace(fog, tls_client_certs=ca), ["m0001", "m0002"])
    ca_cert = x509.load_pem_x509_certificate((ca / "ca.crt").read_bytes())
    for m in ("m0001", "m0002"):
        cfg = load(fog, m)
        assert (cfg["mqtt_tls"], cfg["mqtt_cafile"], cfg["mqtt_certfile"], cfg["mqtt_keyfile"]) == (
            True, "ca.crt", "client.crt", "client.key")
        d = fog.meters_dir / m
        cert = x509.load_pem_x509_certificate((d / "client.crt").read_bytes())
        assert cert.subject.rfc4514_string() == f"CN={m}"  # the MQTT user name
        cert.verify_directly_issued_by(ca_cert)
        key = load_pem_private_key((d / "client.key").read_bytes(), None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()
        assert stat.S_IMODE((d / "client.key").stat().st_mode) == 0o600
        assert (d / "ca.crt").read_bytes() == (ca / "ca.crt").read_bytes()
    assert (fog.meters_dir / "m0001" / "client.key").read_bytes() != (fog.meters_dir / "m0002" / "client.key").read_bytes()


def test_rotation_can_turn_tls_on_for_a_provisioned_meter(fog, ca):
    provision_meters(fog, ["m0001"])
    assert "mqtt_tls" not in load(fog, "m0001")
    provision_meters(replace(fog, tls_ca=ca / "ca.crt"), ["m0001"], rotate=True)
    assert load(fog, "m0001")["mqtt_tls"] is True and (fog.meters_dir / "m0001" / "ca.crt").is_file()


def test_an_unusable_ca_or_client_folder_is_refused_before_any_change(fog, tmp_path):
    bad = tmp_path / "ca.der"
    bad.write_bytes(b"\x30\x82\x01\x0a")
    for site, words in ((replace(fog, tls_ca=bad), "not a PEM certificate"),
                        (replace(fog, tls_ca=tmp_path / "missing.crt"), "cannot read it"),
                        (replace(fog, tls_client_certs=tmp_path / "nowhere"), "no CA in"),
                        (replace(fog, tls_hostname="fog1.lan"), "tls_hostname: only used with tls_ca")):
        with pytest.raises(ProvisionError) as e:
            provision_meters(site, ["m0001"])
        assert words in str(e.value)
        assert not fog.meters_dir.exists() and not fog.passwd_file.exists()


def test_the_tls_keys_are_not_set_through_the_meter_table(fog, ca, tmp_path):
    site_file = tmp_path / "site.toml"
    site_file.write_text('wifi_ssid = "x"\n[meter]\nmqtt_tls = true\n')
    from aquafog.provisioning import site

    with pytest.raises(ProvisionError) as e:
        site.load(site_file, {})
    assert "meter.mqtt_tls: give tls_ca" in str(e.value)


def test_the_command_line_flags(fog, ca, tmp_path):
    r = subprocess.run([sys.executable, "-m", "aquafog", "meter", "provision", "m0009", "--no-reload",
                        "--wifi-ssid", "pumphouse", "--broker-host", "192.168.1.10", "--broker-port", "8883",
                        "--db", str(fog.db), "--passwd-file", str(fog.passwd_file), "--acl-file", str(fog.acl_file),
                        "--meters-dir", str(fog.meters_dir), "--tls-client-certs", str(ca),
                        "--tls-hostname", "fog1.lan"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "AQUAFOG_SITE": ""})  # no site file, whatever this machine has
    assert r.returncode == 0, r.stderr
    assert "TLS          mqtt_tls on; next to each config.json: ca.crt, client.crt, client.key" in r.stdout
    cfg = load(fog, "m0009")
    assert (cfg["mqtt_tls_hostname"], cfg["mqtt_certfile"]) == ("fog1.lan", "client.crt")
