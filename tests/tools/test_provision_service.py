"""Service accounts (the gateway's broker account, the cloud's, a fog's bridge on the cloud
broker): a role's block in the ACL, a password shown once or written to a private file,
refusal and rotation, and the service listener's own files."""

from __future__ import annotations

import stat
import tomllib
from dataclasses import replace

import pytest

from aquafog.provisioning import ProvisionError, acl, mosquitto
from aquafog.provisioning.provisioner import credentials_lines, provision_meters, provision_service


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


# -- the service listener's own files (services_passwd_file, services_acl_file) -------------------
@pytest.fixture
def split(fog, tmp_path):
    """A fog whose service listener has its own password and ACL files."""
    return replace(fog, services_passwd_file=tmp_path / "services.passwd", services_acl_file=tmp_path / "services.acl")


def test_service_accounts_go_into_the_service_listeners_files_only(split, password_ok):
    provision_meters(split, ["m1"])
    meters_passwd, meters_acl = split.passwd_file.read_bytes(), split.acl_file.read_bytes()
    run = provision_service(split, "gateway")
    assert (run.passwd_file, run.acl_file) == (split.services_passwd_file, split.services_acl_file)
    assert password_ok(split.services_passwd_file, "gateway", run.password)
    assert split.services_acl_file.read_text() == acl.ensure("", "aquafog", {"gateway": "gateway"}, patterns=False)
    # a stolen meter password is no key to the service listener, and no service account is a meter's key
    assert (split.passwd_file.read_bytes(), split.acl_file.read_bytes()) == (meters_passwd, meters_acl)
    assert "gateway" not in mosquitto.passwd_users(split.passwd_file)


def test_meters_never_go_into_the_service_listeners_files(split):
    provision_service(split, "gateway")
    services = split.services_passwd_file.read_bytes(), split.services_acl_file.read_bytes()
    provision_meters(split, ["m1", "m2"])
    assert (split.services_passwd_file.read_bytes(), split.services_acl_file.read_bytes()) == services
    assert mosquitto.passwd_users(split.passwd_file) == {"m1", "m2"}


def test_a_meter_may_not_take_a_service_accounts_name_in_either_file(split):
    provision_service(split, "gateway")
    with pytest.raises(ProvisionError, match=rf"gateway: is a service account \(`user gateway` in "
                                             rf"{split.services_acl_file}\)"):
        provision_meters(split, ["gateway"])
    # an account in the services' password file alone (made by hand) counts too
    split.services_acl_file.write_text("")
    with pytest.raises(ProvisionError, match=rf"gateway: is a service account \(a user of "
                                             rf"{split.services_passwd_file}\)"):
        provision_meters(split, ["gateway"])
    assert "gateway" not in mosquitto.passwd_users(split.passwd_file)


def test_a_service_account_may_not_take_a_meters_name(split):
    provision_meters(split, ["gw1"])
    (split.meters_dir / "gw1" / "config.json").unlink()  # provisioned elsewhere: only its account is here
    with pytest.raises(ProvisionError, match="'gw1' has an account in the meters' password file"):
        provision_service(split, "gw1", role="gateway")
    assert not split.services_passwd_file.exists()


# -- accounts on the cloud broker ----------------------------------------------------------------
def test_a_fogs_bridge_account(fog, password_ok):
    run = provision_service(fog, None, region="north")
    assert (run.name, run.role, run.region) == ("fog-north", "fog", "north")
    assert password_ok(fog.passwd_file, "fog-north", run.password)
    text = fog.acl_file.read_text()
    assert "topic write aquafog-city/fogs/north/summary/#" in text.splitlines()
    assert "pattern" not in text  # a cloud broker has no meters
    assert provision_service(fog, "fog-north", role="fog", region="north", rotate=True).rotated
    assert fog.acl_file.read_text() == text


def test_the_cloud_account(fog):
    run = provision_service(fog, "city", role="cloud")
    assert run.role == "cloud" and run.region is None
    assert "topic readwrite aquafog-city/city/#" in fog.acl_file.read_text().splitlines()


def test_region_and_role_must_agree(fog):
    with pytest.raises(ProvisionError, match="only the fog role has a region"):
        provision_service(fog, "gateway", region="north")
    with pytest.raises(ProvisionError, match="role fog: which region"):
        provision_service(fog, "fog-north", role="fog")
    with pytest.raises(ProvisionError, match="which account"):
        provision_service(fog, None, role="cloud")
    assert not fog.passwd_file.exists() and not fog.acl_file.exists()


def test_credentials_lines_name_where_they_go(fog):
    run = provision_service(fog, "city", role="cloud")
    assert tomllib.loads(credentials_lines("city", run.password, "cloud")) == \
        {"mqtt_username": "city", "mqtt_password": run.password}
    assert tomllib.loads(credentials_lines("fog-north", "pw", "fog")) == \
        {"remote_username": "fog-north", "remote_password": "pw"}
