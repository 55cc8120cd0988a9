"""The service listener in the generated mosquitto.conf (no broker here; the real one is in
tests/integration/test_provision.py): with it, every listener carries its own password
file and ACL, and the meters' listeners bind a client id to its user name."""

from __future__ import annotations

import pytest

from aquafog.broker import BrokerConfig
from aquafog.cli import main as cli_main
from aquafog.tls import TlsListener

AUTH = ["allow_anonymous false", "password_file /etc/mosquitto/aquafog.passwd",
        "acl_file /etc/mosquitto/aquafog.acl"]


def blocks(text: str) -> dict[str, list[str]]:
    """Each listener line with the lines after it, up to the next listener or comment."""
    out, current = {}, None
    for line in text.splitlines():
        if line.startswith("listener "):
            current = out.setdefault(line, [])
        elif line.startswith("#") or line.startswith("connection "):
            current = None
        elif current is not None:
            current.append(line)
    return out


def config(tmp_path, **kw) -> BrokerConfig:
    return BrokerConfig(port=1883, host="0.0.0.0", data_dir=tmp_path, allow_anonymous=False,
                        password_file="/etc/mosquitto/aquafog.passwd", acl_file="/etc/mosquitto/aquafog.acl", **kw)


def test_with_a_service_port_each_listener_has_its_own_auth_and_meters_ids_are_their_names(tmp_path):
    tls = TlsListener("/c/ca.crt", "/c/server.crt", "/c/server.key", port=8883, host="0.0.0.0")
    text = config(tmp_path, service_port=1884, tls=tls).render()
    assert "per_listener_settings true" in text.splitlines()
    got = blocks(text)
    assert got["listener 1884 127.0.0.1"] == AUTH  # the services: loopback, ids their own
    assert got["listener 1883 0.0.0.0"] == AUTH + ["use_username_as_clientid true"]
    assert got["listener 8883 0.0.0.0"][-4:] == AUTH + ["use_username_as_clientid true"]
    assert got["listener 8883 0.0.0.0"][0] == "cafile /c/ca.crt"
    # nothing of the auth outside a listener (with per-listener settings it would bind nobody)
    head = text.split("listener ", 1)[0]
    assert "password_file" not in head and "allow_anonymous" not in head


def test_without_one_the_settings_stay_global_and_ids_free(tmp_path):
    text = config(tmp_path).render()
    assert "per_listener_settings false" in text.splitlines()
    assert "use_username_as_clientid" not in text
    assert [x for x in text.splitlines() if x.startswith(("password_file", "acl_file", "allow_anonymous"))] == AUTH


def test_a_service_port_needs_passwords_and_a_port_of_its_own(tmp_path):
    with pytest.raises(ValueError, match=r"service port: .* needs a password file \(--password-file\)"):
        BrokerConfig(port=1883, data_dir=tmp_path, service_port=1884, allow_anonymous=True).render()
    with pytest.raises(ValueError, match="service port: 1883 is another listener's port too"):
        config(tmp_path, service_port=1883).render()


def test_broker_config_flags(capsys, tmp_path):
    args = ["broker-config", "--data-dir", str(tmp_path), "--host", "0.0.0.0",
            "--password-file", "/etc/mosquitto/aquafog.passwd", "--acl-file", "/etc/mosquitto/aquafog.acl"]
    assert cli_main(args + ["--service-port", "1884"]) == 0
    assert blocks(capsys.readouterr().out)["listener 1883 0.0.0.0"][-1] == "use_username_as_clientid true"
    assert cli_main(["broker-config", "--service-port", "1884"]) == 2
    assert "--password-file" in capsys.readouterr().err


def test_no_broker_without_accounts_unless_anonymous_is_asked_for(tmp_path, capsys):
    """Secure by default: a config that would let anyone in is refused, naming the fix."""
    with pytest.raises(ValueError, match=r"password file: with anonymous access off, clients need accounts"):
        BrokerConfig(port=1883, data_dir=tmp_path).render()
    assert cli_main(["broker-config", "--data-dir", str(tmp_path)]) == 2
    assert "--password-file" in capsys.readouterr().err
    text = BrokerConfig(port=1883, data_dir=tmp_path, allow_anonymous=True).render()  # tests on loopback
    assert "allow_anonymous true" in text.splitlines()


def test_a_drop_in_leaves_debians_own_settings_alone(tmp_path):
    text = config(tmp_path, service_port=1884, system=True, service_password_file="/etc/mosquitto/s.passwd",
                  service_acl_file="/etc/mosquitto/s.acl").render()
    assert not any(x.startswith(("persistence_location", "log_dest", "user ", "pid_file"))
                   for x in text.splitlines())
    got = blocks(text)
    assert got["listener 1884 127.0.0.1"] == ["allow_anonymous false", "password_file /etc/mosquitto/s.passwd",
                                              "acl_file /etc/mosquitto/s.acl"]
    assert got["listener 1883 0.0.0.0"] == AUTH + ["use_username_as_clientid true"]
    with pytest.raises(ValueError, match="service ACL file"):
        config(tmp_path, service_port=1884, service_password_file="/etc/mosquitto/s.passwd").render()
