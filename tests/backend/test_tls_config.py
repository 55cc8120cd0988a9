"""TLS settings without a broker: the TLS listener's lines in the generated mosquitto.conf,
`aquafog broker-config`'s TLS flags, the clients' mqtt_cafile/certfile/keyfile, and the
errors a person sees for a missing, unreadable or mismatched file.
(tests/integration/test_tls.py connects through a real Mosquitto.)"""

from __future__ import annotations

import os
import pwd
import shutil
import ssl
import tempfile
from pathlib import Path

import pytest

from aquafog.bridge import BridgeConfig
from aquafog.broker import BrokerConfig, LocalBroker
from aquafog.cli import main as cli_main
from aquafog.config import CloudConfig, ConfigError, GatewayConfig
from aquafog.tls import TlsError, TlsListener, unreadable_by
from aquafog.provisioning import tls as devca


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki") / "ca"
    devca.make_ca(d)
    devca.issue_server(d, ["fog1.lan"])
    devca.issue_client(d, "gateway")
    return d


def listener(certs, **kw) -> TlsListener:
    return TlsListener(str(certs / "ca.crt"), str(certs / "server.crt"), str(certs / "server.key"), **kw)


PW = "/etc/mosquitto/aquafog/meters.passwd"  # every listener has accounts: no anonymous broker is generated


def test_the_tls_listener_follows_the_general_options_and_precedes_the_bridge(certs, tmp_path):
    bridge = BridgeConfig("north", "cloud.example.org", 8883, cafile="/etc/ssl/cloud-ca.crt")
    cfg = BrokerConfig(port=1883, data_dir=tmp_path, extra=["log_type information"], bridge=bridge, password_file=PW,
                       tls=listener(certs, port=8883, host="0.0.0.0", require_certificate=True))
    lines = cfg.render().splitlines()
    tls = lines.index("listener 8883 0.0.0.0")
    assert lines[tls + 1:tls + 6] == [f"cafile {certs / 'ca.crt'}", f"certfile {certs / 'server.crt'}",
                                      f"keyfile {certs / 'server.key'}", "tls_version tlsv1.2",
                                      "require_certificate true"]
    assert lines.index("listener 1883 127.0.0.1") < lines.index("log_type information") < tls
    assert lines[tls + 6:] == bridge.render()  # the bridge follows at once and is last
    assert cfg.render().endswith("\n".join(bridge.render()) + "\n")


def test_tls_only_and_the_listener_choices_that_make_no_sense(certs, tmp_path):
    only = BrokerConfig(port=None, data_dir=tmp_path, tls=listener(certs), password_file=PW).render()
    assert [x for x in only.splitlines() if x.startswith("listener")] == ["listener 8883 127.0.0.1"]
    with pytest.raises(ValueError, match="no listener"):
        BrokerConfig(port=None, data_dir=tmp_path).render()
    with pytest.raises(ValueError, match="tls port: 8883 is the plain listener's port too"):
        BrokerConfig(port=8883, data_dir=tmp_path, tls=listener(certs), password_file=PW).render()
    with pytest.raises(ValueError, match="tls_version: 'tlsv1.1' must be one of tlsv1.2, tlsv1.3"):
        listener(certs, tls_version="tlsv1.1")
    with pytest.raises(ValueError, match="certfile"):
        TlsListener(str(certs / "ca.crt"), "a\nlistener 1 0.0.0.0", str(certs / "server.key"))


def test_file_problems_name_the_option_and_what_to_do(certs, tmp_path):
    missing = TlsListener(str(certs / "ca.crt"), str(tmp_path / "nope.crt"), str(certs / "server.key"))
    assert missing.problems() == [f"tls_certfile: {tmp_path / 'nope.crt'} does not exist; make development "
                                  "certificates with `aquafog tls ca` and `... tls server` "
                                  "(tools/README.md 'TLS'), or give the file your CA issued"]
    wrong_key = TlsListener(str(certs / "ca.crt"), str(certs / "server.crt"), str(certs / "ca.key"))
    assert wrong_key.problems() == [f"tls_keyfile: {certs / 'ca.key'} is not the private key of tls_certfile "
                                    f"{certs / 'server.crt'} (give the key made with that certificate)"]
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate")
    bad_ca = TlsListener(str(not_pem), str(certs / "server.crt"), str(certs / "server.key"))
    assert bad_ca.problems()[0].startswith(f"tls_cafile: {not_pem} holds no usable PEM CA certificate")


def test_local_broker_refuses_to_start_with_a_missing_file(certs, tmp_path):
    b = LocalBroker(tmp_path / "b", tls=TlsListener(str(certs / "ca.crt"), str(tmp_path / "gone.crt"),
                                                    str(certs / "server.key"), port=18883))
    with pytest.raises(TlsError, match="tls_certfile: .*gone.crt does not exist"):
        b.start()
    assert b.proc is None


def test_a_file_mosquitto_cannot_reach_after_dropping_root(tmp_path):
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no user mosquitto on this machine")
    top = Path(tempfile.mkdtemp(prefix="aquafog-tls-perm-"))  # not tmp_path: pytest's folders are private
    try:
        os.chmod(top, 0o755)
        private = top / "private"
        private.mkdir()
        os.chmod(private, 0o700)
        key = private / "server.key"
        key.write_text("x")
        assert unreadable_by("mosquitto", key) == f"user mosquitto cannot enter the folder {private}"
        os.chmod(private, 0o755)
        os.chmod(key, 0o600)
        assert unreadable_by("mosquitto", key) == "user mosquitto cannot read it"
        os.chmod(key, 0o644)
        assert unreadable_by("mosquitto", key) is None
        assert unreadable_by("root", key) is None
    finally:
        shutil.rmtree(top)


def test_broker_config_flags(certs, tmp_path, capsys):
    base = ["broker-config", "--data-dir", str(tmp_path), "--host", "127.0.0.1", "--password-file", PW]
    tls = ["--tls-port", "8883", "--tls-host", "0.0.0.0", "--cafile", str(certs / "ca.crt"),
           "--certfile", str(certs / "server.crt"), "--keyfile", str(certs / "server.key")]
    # pytest's folders are private: user mosquitto could not read these, so no file checks here
    assert cli_main(base + tls + ["--require-certificate", "--no-plain-listener", "--skip-file-checks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [x for x in out if x.startswith("listener")] == ["listener 8883 0.0.0.0"]
    assert "require_certificate true" in out and "tls_version tlsv1.2" in out
    assert cli_main(base + tls[:-2]) == 2
    assert "a TLS listener needs --tls-port, --cafile, --certfile and --keyfile" in capsys.readouterr().err
    assert cli_main(base + ["--no-plain-listener"]) == 2
    assert "--no-plain-listener needs a TLS listener" in capsys.readouterr().err
    gone = tls[:-1] + [str(tmp_path / "gone.key")]
    assert cli_main(base + gone) == 2
    assert f"--keyfile: {tmp_path / 'gone.key'} does not exist" in capsys.readouterr().err


def test_client_tls_settings(certs, tmp_path):
    assert GatewayConfig().mqtt_tls is None  # plain MQTT unless mqtt_cafile is set
    cfg = GatewayConfig.load(None, env={}, overrides={
        "mqtt_cafile": str(certs / "ca.crt"), "mqtt_certfile": str(certs / "clients" / "gateway.crt"),
        "mqtt_keyfile": str(certs / "clients" / "gateway.key")})
    ctx = cfg.mqtt_tls.context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError) as e:
        GatewayConfig.load(None, env={"AQUAFOG_MQTT_CAFILE": str(tmp_path / "ca.crt"),
                                      "AQUAFOG_MQTT_CERTFILE": str(certs / "clients" / "gateway.crt")})
    assert e.value.errors[0] == "mqtt_certfile/mqtt_keyfile: give both (a certificate and its private key) or neither"
    assert e.value.errors[1].startswith(f"mqtt_cafile: {tmp_path / 'ca.crt'} does not exist; make development")
    with pytest.raises(ConfigError) as e:
        CloudConfig.load(None, env={"AQUAFOG_CLOUD_MQTT_KEYFILE": str(certs / "server.key"),
                                    "AQUAFOG_CLOUD_MQTT_CERTFILE": str(certs / "clients" / "gateway.crt")})
    assert e.value.errors == [
        "mqtt_certfile: needs mqtt_cafile too (the CA that signed the other end's certificate)",
        f"mqtt_keyfile: {certs / 'server.key'} is not the private key of mqtt_certfile "
        f"{certs / 'clients' / 'gateway.crt'} (give the key made with that certificate)"]
