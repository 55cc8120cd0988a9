"""The generated drop-in (`aquafog broker-config --drop-in`) under Debian's own
mosquitto.conf, run by a real Mosquitto as the Debian service runs it (started as root,
it switches to user mosquitto before reading the password and ACL files): it starts (no
option repeated from Debian's file), refuses anonymous clients on every listener, takes
meters only on the meters' listener and service accounts only on the loopback service
listener."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from aquafog.broker import find_mosquitto, free_port, wait_for_port
from aquafog.cli import main as cli_main

from .connack import connack

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="runs Mosquitto as the Debian service does: as root, "
                                                           "dropping to user mosquitto")]

DEBIAN_CONF = Path("/etc/mosquitto/mosquitto.conf")  # the mosquitto package's own file
WAIT = 10.0


@pytest.fixture
def debian_broker():
    """Debian's mosquitto.conf with its paths moved to a folder of the test, the drop-in in
    its conf.d, and the account files as a fog keeps them (0640 root:mosquitto)."""
    if not DEBIAN_CONF.is_file():
        pytest.fail(f"{DEBIAN_CONF} is missing: the Debian package mosquitto installs it (make test installs it)")
    root = Path(tempfile.mkdtemp(prefix="aquafog-dropin-"))
    os.chmod(root, 0o755)
    mosq = pwd.getpwnam("mosquitto")
    for d in ("data", "run", "log", "conf.d"):
        (root / d).mkdir()
    for d in ("data", "run", "log"):
        os.chown(root / d, mosq.pw_uid, mosq.pw_gid)
    moves = {"pid_file": f"{root}/run/mosquitto.pid", "persistence_location": f"{root}/data/",
             "log_dest": f"file {root}/log/mosquitto.log", "include_dir": f"{root}/conf.d"}
    lines = []
    for line in DEBIAN_CONF.read_text().splitlines():
        key = line.split(" ", 1)[0]
        lines.append(f"{key} {moves[key]}" if key in moves else line)
    assert {x.split(" ", 1)[0] for x in lines if x and not x.startswith("#")} == {
        "pid_file", "persistence", "persistence_location", "log_dest", "include_dir"}, "Debian's file changed"
    conf = root / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")

    gid = grp.getgrnam("mosquitto").gr_gid
    files = {}
    for name, body in (("meters.acl", "pattern write aquafog/%u/tele/#\npattern read aquafog/%u/cmnd/#\n"),
                       ("services.acl", "user gateway\ntopic read aquafog/+/tele/#\ntopic write aquafog/+/cmnd/#\n"),
                       ("meters.passwd", ""), ("services.passwd", "")):
        p = root / name
        p.write_text(body)
        os.chown(p, 0, gid)
        os.chmod(p, 0o640)
        files[name] = p
    for passwd, user, pw in ((files["meters.passwd"], "m0001", "meter-secret-1"),
                             (files["services.passwd"], "gateway", "gateway-secret-1")):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
    meters_port, service_port = free_port(), free_port()
    args = ["broker-config", "--drop-in", "--port", str(meters_port), "--host", "127.0.0.1",
            "--password-file", str(files["meters.passwd"]), "--acl-file", str(files["meters.acl"]),
            "--service-port", str(service_port), "--service-password-file", str(files["services.passwd"]),
            "--service-acl-file", str(files["services.acl"])]
    try:
        yield root, conf, args, meters_port, service_port
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start(conf: Path) -> subprocess.Popen:
    return subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    with proc.stderr:
        return proc.stderr.read().decode(errors="replace")


def test_the_drop_in_starts_under_debians_file_and_keeps_listeners_apart(debian_broker, capsys):
    root, conf, args, meters_port, service_port = debian_broker
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    # what Debian's file already sets is left to it (Mosquitto refuses a second persistence_location)
    for key in ("persistence_location", "log_dest", "pid_file", "user "):
        assert not re.search(rf"^{key}", text, re.M), key
    (root / "conf.d" / "aquafog.conf").write_text(text)
    proc = start(conf)
    try:
        wait_for_port("127.0.0.1", meters_port, WAIT, proc)
        wait_for_port("127.0.0.1", service_port, WAIT, proc)
        # nobody without an account, on either listener
        assert connack(meters_port, None, None, "anon-1") == "Not authorized"
        assert connack(service_port, None, None, "anon-2") == "Not authorized"
        # a meter on its listener, with its own name as client id
        assert connack(meters_port, "m0001", "meter-secret-1", "m0001") == "Success"
        assert connack(meters_port, "m0001", "wrong-password", "m0001") == "Not authorized"
        # a meter's password does not open the service listener, where client ids are free
        assert connack(service_port, "m0001", "meter-secret-1", "aquafog-gateway") == "Not authorized"
        # the gateway's account opens only the service listener
        assert connack(service_port, "gateway", "gateway-secret-1", "aquafog-gateway") == "Success"
        assert connack(meters_port, "gateway", "gateway-secret-1", "gateway") == "Not authorized"
    finally:
        err = stop(proc)
    log = (root / "log" / "mosquitto.log").read_text()
    assert "Duplicate" not in log + err and "Error" not in log + err, log + err
    # Debian's persistence folder got the database when the broker stopped (SIGTERM)
    assert (root / "data" / "mosquitto.db").is_file()


def test_a_plain_config_repeats_debians_options_and_mosquitto_refuses_it(debian_broker, capsys):
    """Why --drop-in exists: the stand-alone file under Debian's file does not start."""
    root, conf, args, meters_port, service_port = debian_broker
    standalone = [a for a in args if a != "--drop-in"] + ["--data-dir", str(root / "data")]
    assert cli_main(standalone) == 0
    (root / "conf.d" / "aquafog.conf").write_text(capsys.readouterr().out)
    proc = start(conf)
    assert proc.wait(WAIT) != 0
    assert "Duplicate persistence_location value" in stop(proc)
