"""The fake board itself: the bytes of the REPL protocol, the confinement of its code, a clean stop."""

from __future__ import annotations

import os
import select
import struct
import threading
import time

import pytest

from fakeboard_repl import RAW, RAW_PROMPT, BoardInterpreter, FakeBoard, FlashFS


class Line:
    """The host's end of the serial line."""

    def __init__(self, port: str):
        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read_until(self, ending: bytes, timeout: float = 5) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(ending):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.fd], [], [], left)[0], "no %r in %r" % (ending, data)
            data += os.read(self.fd, 1)
        return data

    def read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            assert select.select([self.fd], [], [], 5)[0], "board silent after %r" % data
            data += os.read(self.fd, n - len(data))
        return data

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def board(tmp_path):
    fds_before, threads_before = set(os.listdir("/proc/self/fd")), threading.active_count()
    (tmp_path / "flash").mkdir()
    b = FakeBoard(tmp_path / "flash", paste_window=16).start()
    line = Line(b.port)
    yield b, line
    line.close()
    b.stop()
    assert b.errors == []
    assert set(os.listdir("/proc/self/fd")) == fds_before and threading.active_count() == threads_before


def enter_raw(line: Line) -> None:
    line.send(b"\r\x03\r\x01")
    line.read_until(RAW_PROMPT)


def test_raw_paste_gives_credit_per_window_and_frames_output_and_errors(board):
    b, line = board
    enter_raw(line)
    line.send(b"\x05A\x01")
    assert line.read(5) == b"R\x01" + struct.pack("<H", 16) + b"\x01"

    code = b"x = 6 * 7\nprint(x)\nimport os\nos.stat('nope')\n"  # 44 bytes
    line.send(code[:32])  # the whole initial credit: two windows
    assert line.read(2) == b"\x01\x01"  # both consumed: two windows of credit back
    line.send(code[32:] + b"\x04")
    assert line.read(1) == b"\x04"  # the end acknowledged
    reply = line.read_until(b"\x04>")
    out, err, _ = reply.split(b"\x04")
    assert out == b"42\r\n"
    assert err.endswith(b"OSError: [Errno 2] ENOENT\r\n") and b'line 4, in <module>' in err
    assert b.paste_overruns == 0 and b.state == RAW


def test_a_host_that_ignores_the_window_is_caught(board):
    b, line = board
    enter_raw(line)
    line.send(b"\x05A\x01")
    line.read(5)
    line.send(b"#" * 32 + b"\n" + b"\x04")  # 33 bytes against an initial credit of 32
    line.read_until(b"\x04>")
    assert b.paste_overruns == 1


def test_plain_raw_repl_and_soft_reset(board):
    b, line = board
    enter_raw(line)
    line.send(b"y = 1\x04")
    assert line.read_until(b"\x04>") == b"OK\x04\x04>"
    line.send(b"\x04")  # Ctrl-D on an empty line: soft reset, globals gone
    line.read_until(b"soft reboot\r\n" + RAW_PROMPT)
    line.send(b"print(y)\x04")
    assert b"NameError" in line.read_until(b"\x04>")
    assert b.soft_resets == 1


def test_machine_reset_is_a_hard_reset_that_starts_main_py(board):
    b, line = board
    (b.fs.root / "main.py").write_text("")
    enter_raw(line)
    line.send(b"import machine; machine.reset()\x04")
    assert b.reset_event.wait(5)
    assert (b.hard_resets, b.state) == (1, "running main.py")


def test_code_on_the_board_reaches_only_the_flash_root(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("host file")
    root = tmp_path / "flash"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    interp = BoardInterpreter(FlashFS(root), (1, 27, 0), frozen=())

    def error_of(code: str) -> str:
        out, err = interp.run(code.encode())
        return err.decode().strip().splitlines()[-1]

    assert error_of("open('/../%s')" % outside) == "OSError: [Errno 2] ENOENT"  # resolves inside root
    assert error_of("open('escape/outside.txt')") == "OSError: [Errno 13] EACCES"
    assert error_of("import os\nos.remove('/escape/outside.txt')") == "OSError: [Errno 13] EACCES"
    assert error_of("import subprocess") == "ImportError: no module named 'subprocess'"
    assert error_of("import socket") == "ImportError: no module named 'socket'"
    interp.run(b"f = open('/note.txt', 'w')\nf.write('on the board')\nf.close()")
    assert (root / "note.txt").read_text() == "on the board" and outside.read_text() == "host file"


def test_modules_on_the_flash_or_frozen_are_importable(tmp_path):
    root = tmp_path / "flash"
    (root / "lib" / "umqtt").mkdir(parents=True)
    interp = BoardInterpreter(FlashFS(root), (1, 27, 0), frozen=("ntptime",))
    assert b"ImportError" in interp.run(b"import umqtt.simple")[1]
    (root / "lib" / "umqtt" / "simple.mpy").write_bytes(b"M\x06")
    assert interp.run(b"import umqtt.simple\nimport ntptime\nprint(umqtt.simple.__name__)") == (b"umqtt.simple\r\n", b"")


def test_stop_returns_even_when_nobody_reads_the_output(tmp_path):
    (tmp_path / "flash").mkdir()
    b = FakeBoard(tmp_path / "flash").start()
    line = Line(b.port)
    enter_raw(line)
    line.send(b"print('x' * 1000000)\x04")  # far more than a pty buffers
    line.read_until(b"OKx")  # the output has begun; the rest is never read
    try:
        b.stop()  # must not hang on the blocked write
    finally:
        line.close()
    assert b.errors == []
