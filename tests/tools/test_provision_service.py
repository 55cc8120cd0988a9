"""Service accounts (the gateway's broker account): a role's block in the ACL, a
password shown once or written to a private file, refusal and rotation."""

from __future__ import annotations

import stat
import tomllib
from dataclasses import replace

import pytest

from provisioning import ProvisionError, acl
from provisioning.provisioner import provision_meters, provision_service


def test_gateway_account(fog, password_ok):
    run = provision_service(fog, "gateway")
    assert (run.name, run.role, run.rotated) == ("gateway", "gateway", False)
    assert password_ok(fog.passwd_file, "gateway", run.password)
    assert fog.acl_file.read_text() == acl.ensure("", "aquafog", {"gateway": "gateway"})


def test_password_out_is_a_private_toml_snippet(fog, tmp_path, password_ok):
    out = tmp_path / "gateway-mqtt.toml"
    run = provision_service(fog, "gateway", password_out=out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert tomllib.loads(out.read_text()) == {"mqtt_username": "gateway", "mqtt_password": run.password}


def test_password_out_never_overwrites(fog, tmp_path):
    out = tmp_path / "gateway.toml"
    out.write_text('db_path = "x"\n')
    with pytest.raises(ProvisionError, match="the file exists, it is not overwritten"):
        provision_service(fog, "gateway", password_out=out)
    assert out.read_text() == 'db_path = "x"\n'
    assert not fog.passwd_file.exists()


def test_existing_account_is_refused_then_rotated(fog, password_ok):
    first = provision_service(fog, "gateway")
    acl_before = fog.acl_file.read_text()
    with pytest.raises(ProvisionError, match="service account 'gateway' already exists") as e:
        provision_service(fog, "gateway")
    assert "--rotate-password" in e.value.hint
    assert password_ok(fog.passwd_file, "gateway", first.password)
    second = provision_service(fog, "gateway", rotate=True)
    assert second.rotated and second.password != first.password
    assert password_ok(fog.passwd_file, "gateway", second.password)
    assert fog.acl_file.read_text() == acl_before


def test_named_role(fog):
    run = provision_service(fog, "tech", role="observer")
    assert run.role == "observer"
    assert "user tech" in fog.acl_file.read_text().splitlines()


def test_a_name_that_is_no_role_needs_one(fog):
    with pytest.raises(ProvisionError) as e:
        provision_service(fog, "tech")
    assert "which role?" in e.value.message
    assert [d.split(":")[0] for d in e.value.details] == list(acl.ROLES)


def test_a_meter_cannot_become_a_service_account(fog, password_ok):
    provision_meters(fog, ["gw1"])
    with pytest.raises(ProvisionError, match="'gw1' is a meter"):
        provision_service(fog, "gw1", role="gateway")
    (fog.meters_dir / "gw1" / "config.json").unlink()
    # an account without a user block is a meter's (made elsewhere): rotation leaves it alone
    with pytest.raises(ProvisionError, match="no `user gw1` block"):
        provision_service(fog, "gw1", role="gateway", rotate=True)
    assert "user gw1" not in fog.acl_file.read_text()


def test_rotating_an_unknown_account(fog):
    with pytest.raises(ProvisionError, match="does not exist, there is no password to rotate"):
        provision_service(fog, "gateway", rotate=True)


def test_service_names_follow_the_id_rule(fog):
    with pytest.raises(ProvisionError, match="service account name 'Gate:way'"):
        provision_service(fog, "Gate:way", role="gateway")


def test_topic_root_of_the_site(fog):
    provision_service(replace(fog, topic_root="city"), "gateway")
    lines = fog.acl_file.read_text().splitlines()
    assert "topic write city/+/cmnd/#" in lines and "pattern write city/%u/tele/#" in lines
