"""`aquafog tls` (aquafog.provisioning.tls): the development CA, the broker's and clients' certificates."""

from __future__ import annotations

import grp
import ipaddress
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from aquafog.cli import main as aquafog
from aquafog.provisioning import ProvisionError
from aquafog.provisioning import tls as devca


def mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def load(p) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


@pytest.fixture
def ca(tmp_path):
    d = tmp_path / "certs"
    devca.make_ca(d)
    return d


def test_the_ca_is_a_ca_and_its_key_is_private(ca):
    cert = load(ca / "ca.crt")
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed: its own key signed it
    assert mode(ca / "ca.key") == 0o600 and mode(ca / "ca.crt") == 0o644


def test_the_server_certificate_chains_to_the_ca_and_names_every_host(ca):
    got = devca.issue_server(ca, ["fog1.example.org", "192.168.1.10"])
    cert = load(ca / "server.crt")
    cert.verify_directly_issued_by(load(ca / "ca.crt"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fog1.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in
                                                      ("192.168.1.10", "127.0.0.1", "::1")]
    assert ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not got.replaced
    # the key fits the certificate (what Mosquitto loads), and Python's TLS accepts the pair
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(ca / "server.crt", ca / "server.key")


def test_the_brokers_key_is_readable_by_mosquitto_only_and_other_keys_by_their_owner(ca):
    devca.issue_server(ca, ["fog1"])
    devca.issue_client(ca, "gateway")
    key = ca / "server.key"
    try:
        gid = grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        gid = None
    if gid is not None and key.stat().st_gid == gid:
        assert mode(key) == 0o640  # Mosquitto 2.0 reads it after dropping root to user mosquitto
    else:
        assert mode(key) == 0o600
    assert mode(ca / "clients" / "gateway.key") == 0o600
    assert mode(ca) == 0o755  # user mosquitto must reach server.key


def test_without_loopback_the_certificate_names_only_the_given_hosts(ca):
    devca.issue_server(ca, ["fog.test"], loopback=False)
    san = load(ca / "server.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.value for n in san] == ["fog.test"]


def test_a_client_certificate_names_its_mqtt_user(ca):
    devca.issue_client(ca, "m0001", key_type="rsa")
    cert = load(ca / "clients" / "m0001.crt")
    cert.verify_directly_issued_by(load(ca / "ca.crt"))
    assert cert.subject.rfc4514_string() == "CN=m0001"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert cert.public_key().key_size == 2048


def test_an_existing_ca_is_never_replaced_unless_asked(ca):
    before = (ca / "ca.crt").read_bytes(), (ca / "ca.key").read_bytes()
    with pytest.raises(ProvisionError) as e:
        devca.make_ca(ca)
    assert "a CA already exists" in e.value.message and "--force" in e.value.hint
    assert ((ca / "ca.crt").read_bytes(), (ca / "ca.key").read_bytes()) == before
    assert devca.make_ca(ca, force=True).replaced
    assert (ca / "ca.crt").read_bytes() != before[0] and (ca / "ca.key").read_bytes() != before[1]


def test_leaf_certificates_are_replaced_for_rotation(ca):
    devca.issue_server(ca, ["fog1"])
    first = (ca / "server.crt").read_bytes()
    assert devca.issue_server(ca, ["fog1"]).replaced
    assert (ca / "server.crt").read_bytes() != first


def test_bad_hosts_and_names_are_refused_all_at_once(ca):
    with pytest.raises(ProvisionError) as e:
        devca.issue_server(ca, ["ok.example", "bad host", "-x", "under_score.lan"])
    assert e.value.details == ["'bad host': neither an IP address nor a host name (letters, digits, - and .)",
                               "'-x': neither an IP address nor a host name (letters, digits, - and .)",
                               "'under_score.lan': neither an IP address nor a host name (letters, digits, - and .)"]
    assert not (ca / "server.crt").exists()
    with pytest.raises(ProvisionError, match="client name 'a/b'"):
        devca.issue_client(ca, "a/b")


def test_certificates_need_the_ca_first(tmp_path):
    with pytest.raises(ProvisionError) as e:
        devca.issue_server(tmp_path / "none", ["fog1"])
    assert "no CA in" in e.value.message and "tls ca --dir" in e.value.hint


def test_the_command(tmp_path, capsys):
    d = str(tmp_path / "c")
    assert aquafog(["tls", "ca", "--dir", d]) == 0
    assert "made a development CA" in capsys.readouterr().out
    assert aquafog(["tls", "ca", "--dir", d]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aquafog tls ca: a CA already exists in ") and "--force" in err
    assert aquafog(["tls", "server", "--dir", d, "fog1.lan", "10.1.2.3"]) == 0
    out = capsys.readouterr().out
    assert "for fog1.lan, 10.1.2.3, localhost, 127.0.0.1, ::1" in out and "--tls-port 8883" in out
    assert aquafog(["tls", "client", "gateway", "--dir", d]) == 0
    assert "mqtt_certfile" in capsys.readouterr().out
