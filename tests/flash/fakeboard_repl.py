"""A fake MicroPython board behind a pseudo-terminal, for testing tools that drive mpremote.

`FakeBoard(flash_root)` opens a pty (`board.port` is its /dev/pts/N), answers on it as
MicroPython's REPL does (shared/runtime/pyexec.c), and keeps its flash in a host
directory. It models:

- the firmware running main.py (after a hard reset, when /main.py exists): input is
  ignored except Ctrl-C, which stops it and leaves the friendly REPL;
- the friendly REPL: Ctrl-A enters the raw REPL, Ctrl-B prints the banner, Ctrl-C a new
  prompt, Ctrl-D a soft reset (typed lines are echoed, not executed);
- the raw REPL: bytes collect until Ctrl-D, then "OK", the output, 0x04, the error output,
  0x04 and the ">" prompt; Ctrl-D on an empty line is a soft reset; Ctrl-B leaves;
- raw-paste mode (Ctrl-E 'A' Ctrl-A): answers "R\\x01", the window size and one extra
  credit, gives a credit (0x01) per window consumed, acknowledges the end with 0x04
  before running the code, and counts bytes a host sends beyond its credit
  (`paste_overruns`; a real board would lose them);
- `machine.reset()`: a hard reset (no end-of-output markers, ROM boot text, main.py runs).

Code is run by CPython in a namespace that stands for the board: `open` and `os` reach
only files under the flash root (a path outside it is refused with EACCES), and `import`
knows a few MicroPython modules (os, time, machine, sys, gc, hashlib, binascii, struct,
errno, json), the `frozen` modules and the modules present on the fake flash in "" or
"/lib" (stand-ins: their presence is modelled, their code is never run). Anything else
is `ImportError`. Errors print as MicroPython prints them (`OSError: [Errno 2] ENOENT`),
which is what mpremote parses. The confinement keeps honest code inside the root; it is
not a security sandbox.

For assertions: `hard_resets`, `soft_resets`, `reset_event` (set at every hard reset),
`written` and `removed` (board paths), `snippets` (the code run), `paste_overruns`,
`errors` (exceptions that broke the fake itself) and `state`. Read them after
`reset_event` is set or after `stop()`: the board runs in its own thread.

`stop()` (or leaving the `with` block) ends the thread and closes every descriptor and
every file the board's code left open.
"""

from __future__ import annotations

import builtins
import errno
import os
import posixpath
import selectors
import struct
import threading
import traceback
import tty
import types
from pathlib import Path

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
ROM_BOOT_TEXT = b"ets Jul 29 2019 12:21:46\r\n\r\nrst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
S_IFDIR, S_IFREG = 0x4000, 0x8000  # the only mode bits MicroPython's littlefs reports

RUNNING, FRIENDLY, RAW, RAW_PASTE = "running main.py", "friendly REPL", "raw REPL", "raw-paste"


class _HardReset(BaseException):
    """machine.reset(): unwinds the board's code; `except Exception` must not catch it."""


class _SoftReset(BaseException):
    """machine.soft_reset()."""


class _Stopped(Exception):
    """stop() was called while the board waited to write."""


def board_error(code: int) -> OSError:
    """MicroPython's OSError(errno); CPython needs a second argument to set .errno."""
    return OSError(code, errno.errorcode.get(code, ""))


class FlashFS:
    """The board's filesystem: board paths ("/aquameter/app.mpy") mapped under a host root."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.cwd = "/"
        self.written: list[str] = []
        self.removed: list[str] = []
        self.open_files: list = []

    def board_path(self, path: str) -> str:
        joined = posixpath.normpath(posixpath.join(self.cwd, str(path)))
        return "/" + joined.lstrip("/")  # normpath keeps a leading "//"

    def host_path(self, path: str) -> Path:
        host = (self.root / self.board_path(path).lstrip("/")).resolve()
        if host != self.root and self.root not in host.parents:
            raise board_error(errno.EACCES)  # a symlink pointing out of the flash
        return host

    def exists(self, path: str) -> bool:
        return self.host_path(path).exists()

    def open(self, path, mode="r", *_ignored, **_also_ignored):
        host = self.host_path(path)
        if any(m in mode for m in "wax+"):
            self.written.append(self.board_path(path))
        try:
            f = open(host, mode) if "b" in mode else open(host, mode, encoding="utf-8")
        except OSError as e:
            raise board_error(e.errno) from None
        self.open_files.append(f)
        return f

    def close_all(self) -> None:
        for f in self.open_files:
            f.close()
        self.open_files.clear()

    def os_module(self) -> types.ModuleType:
        """The board's `os`: MicroPython's names, errors carry only an errno."""
        fs = self
        m = types.ModuleType("os")

        def mp_errors(fn):
            def wrapped(*args):
                try:
                    return fn(*args)
                except OSError as e:
                    raise board_error(e.errno) from None
            wrapped.__name__ = fn.__name__
            return wrapped

        @mp_errors
        def ilistdir(path=""):
            host = fs.host_path(path)
            entries = []
            for name in sorted(os.listdir(host)):
                st = os.stat(host / name)
                kind = S_IFDIR if (st.st_mode & 0o170000) == 0o040000 else S_IFREG
                entries.append((name, kind, 0, 0 if kind == S_IFDIR else st.st_size))
            return iter(entries)

        @mp_errors
        def stat(path):
            st = os.stat(fs.host_path(path))
            is_dir = (st.st_mode & 0o170000) == 0o040000
            t = int(st.st_mtime)
            return (S_IFDIR if is_dir else S_IFREG, 0, 0, 0, 0, 0, 0 if is_dir else st.st_size, t, t, t)

        @mp_errors
        def remove(path):
            os.remove(fs.host_path(path))
            fs.removed.append(fs.board_path(path))

        @mp_errors
        def rmdir(path):
            os.rmdir(fs.host_path(path))
            fs.removed.append(fs.board_path(path))

        @mp_errors
        def mkdir(path):
            os.mkdir(fs.host_path(path))

        @mp_errors
        def rename(old, new):
            os.rename(fs.host_path(old), fs.host_path(new))
            fs.written.append(fs.board_path(new))

        @mp_errors
        def chdir(path):
            if not fs.host_path(path).is_dir():
                raise board_error(errno.ENOENT)
            fs.cwd = fs.board_path(path)

        m.ilistdir = ilistdir
        m.listdir = lambda path="": [e[0] for e in ilistdir(path)]
        m.stat = stat
        m.remove, m.rmdir, m.mkdir, m.rename, m.chdir = remove, rmdir, mkdir, rename, chdir
        m.getcwd = lambda: fs.cwd
        m.statvfs = lambda path="/": (4096, 4096, 512, 400, 400, 0, 0, 0, 0, 255)
        m.sync = lambda: None
        m.uname = lambda: ("esp32", "esp32", "", "", "ESP32 module with ESP32")
        return m


class BoardInterpreter:
    """Runs code as the board would: its own globals (kept until a reset) and modules."""

    def __init__(self, fs: FlashFS, version: tuple, frozen: tuple):
        self.fs = fs
        self.version = version
        self.frozen = set(frozen)
        self.reset_namespace()

    def reset_namespace(self) -> None:
        self.fs.close_all()
        self.fs.cwd = "/"
        self.modules = self._builtin_modules()
        self.out: list[str] = []
        board_builtins = dict(vars(builtins))
        board_builtins.update(open=self.fs.open, print=self._print, __import__=self._import)
        for name in ("input", "exit", "quit", "help", "breakpoint"):
            board_builtins.pop(name, None)
        self.globals = {"__builtins__": board_builtins, "__name__": "__main__"}

    def _builtin_modules(self) -> dict:
        def module(name, **attrs):
            m = types.ModuleType(name)
            m.__dict__.update(attrs)
            return m

        def hard_reset():
            raise _HardReset()

        def soft_reset():
            raise _SoftReset()

        noop = lambda *_: None  # noqa: E731 - the board's sleeps take no host time
        time_mod = module("time", sleep=noop, sleep_ms=noop, sleep_us=noop, ticks_ms=lambda: 0,
                          ticks_diff=lambda a, b: a - b, time=lambda: 0)
        version = tuple(self.version) + ("",)
        sys_mod = module("sys", platform="esp32", byteorder="little", path=["", ".frozen", "/lib"],
                         implementation=types.SimpleNamespace(name="micropython", version=version),
                         version="3.4.0; MicroPython v%d.%d.%d" % tuple(self.version[:3]))
        modules = {
            "os": self.fs.os_module(),
            "time": time_mod,
            "machine": module("machine", reset=hard_reset, soft_reset=soft_reset, freq=lambda: 160000000,
                              unique_id=lambda: b"\x24\x0a\xc4\x00\x00\x01"),
            "sys": sys_mod,
            "gc": module("gc", collect=noop, mem_free=lambda: 100000, mem_alloc=lambda: 20000),
            "micropython": module("micropython", const=lambda x: x),
        }
        for name in ("hashlib", "binascii", "struct", "errno", "json"):
            modules[name] = __import__(name)  # pure computation, no I/O
        modules["uos"], modules["utime"] = modules["os"], modules["time"]
        return modules

    def _print(self, *args, sep=" ", end="\n", file=None, flush=False):
        self.out.append(sep.join(str(a) for a in args) + end)

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if name not in self.modules:
            if not self._on_board(name):
                raise ImportError("no module named '%s'" % name)
            self._add_stand_in(name)
        if fromlist:
            return self.modules[name]
        return self.modules[name.split(".")[0]]

    def _on_board(self, name: str) -> bool:
        if name in self.frozen:
            return True
        rel = name.replace(".", "/")
        for base in ("/", "/lib/"):  # sys.path without .frozen
            if self.fs.host_path(base + rel).is_dir():  # a package
                return True
            if any(self.fs.host_path(base + rel + ext).is_file() for ext in (".py", ".mpy")):
                return True
        return False

    def _add_stand_in(self, name: str) -> None:
        parent = None
        parts = name.split(".")
        for i in range(len(parts)):
            dotted = ".".join(parts[: i + 1])
            mod = self.modules.setdefault(dotted, types.ModuleType(dotted))
            if parent is not None:
                setattr(parent, parts[i], mod)
            parent = mod

    def run(self, source: bytes) -> tuple[bytes, bytes]:
        """Run one raw-REPL submission; returns (output, error output). Resets propagate."""
        self.out = []
        err = ""
        try:
            code = compile(source.decode("utf-8"), "<stdin>", "exec")
        except SyntaxError as e:
            err = 'Traceback (most recent call last):\n  File "<stdin>", line %s\nSyntaxError: invalid syntax\n' % e.lineno
        else:
            try:
                exec(code, self.globals)
            except Exception as e:  # the board prints it; _HardReset/_SoftReset pass through
                err = _micropython_traceback(e)
        cooked = lambda text: text.replace("\r\n", "\n").replace("\n", "\r\n").encode()  # noqa: E731
        return cooked("".join(self.out)), cooked(err)


def _micropython_traceback(e: BaseException) -> str:
    lines = ["Traceback (most recent call last):"]
    for frame in traceback.extract_tb(e.__traceback__):
        if frame.filename == "<stdin>":
            lines.append('  File "<stdin>", line %d, in %s' % (frame.lineno, frame.name))
    if isinstance(e, OSError) and e.errno:
        lines.append("OSError: [Errno %d] %s" % (e.errno, errno.errorcode.get(e.errno, "")))
    else:
        lines.append("%s: %s" % (type(e).__name__, e))
    return "\n".join(lines) + "\n"


class FakeBoard:
    """A MicroPython board on a pty; see the module docstring."""

    def __init__(self, flash_root: Path, *, version=(1, 27, 0), frozen=(), paste_window=128):
        self.fs = FlashFS(flash_root)
        self.interp = BoardInterpreter(self.fs, version, frozen)
        self.version = version
        self.paste_window = paste_window
        self.state = RUNNING if self.fs.exists("/main.py") else FRIENDLY
        self.hard_resets = 0
        self.soft_resets = 0
        self.reset_event = threading.Event()
        self.snippets: list[str] = []
        self.paste_overruns = 0
        self.errors: list[BaseException] = []
        self._line = bytearray()
        self._thread = None
        self._master = self._slave = self._stop_r = self._stop_w = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "FakeBoard":
        self._master, self._slave = os.openpty()
        # Raw mode before any client opens it: no echo of what we write, no CR/LF mangling.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="fakeboard-repl", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=10)
            assert not self._thread.is_alive(), "fake board thread did not stop"
            self._thread = None
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._stop_r = self._stop_w = None
        self.fs.close_all()

    def __enter__(self) -> "FakeBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def written(self) -> list[str]:
        return self.fs.written

    @property
    def removed(self) -> list[str]:
        return self.fs.removed

    # -- the serial line -------------------------------------------------------------
    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._master, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            try:
                while True:
                    ready = {key.fd for key, _ in sel.select()}
                    if self._stop_r in ready:
                        return
                    try:
                        data = os.read(self._master, 4096)
                    except BlockingIOError:
                        continue
                    for byte in data:
                        self._receive(byte)
                    self._grant_credits()
            except _Stopped:
                return
            except BaseException as e:  # a bug in the fake: keep it for the test to report
                self.errors.append(e)

    def _send(self, data: bytes) -> None:
        # Non-blocking with a stop check: a client that stopped reading cannot hang stop().
        with selectors.DefaultSelector() as sel:
            sel.register(self._master, selectors.EVENT_WRITE)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while data:
                events = sel.select()
                if any(key.fd == self._stop_r for key, _ in events):
                    raise _Stopped()
                try:
                    data = data[os.write(self._master, data):]
                except BlockingIOError:
                    pass

    # -- the REPL, one received byte at a time -----------------------------------------
    def _receive(self, c: int) -> None:
        if self.state == RUNNING:
            if c == CTRL_C:  # KeyboardInterrupt: main.py ends, the friendly REPL starts
                self.state = FRIENDLY
                self._send(b"\r\n" + self._banner() + b">>> ")
        elif self.state == FRIENDLY:
            self._receive_friendly(c)
        elif self.state == RAW:
            self._receive_raw(c)
        else:
            self._receive_paste(c)

    def _banner(self) -> bytes:
        v = "%d.%d.%d" % tuple(self.version[:3])
        return ("MicroPython v%s on 2025-12-09; Generic ESP32 module with ESP32\r\n"
                'Type "help()" for more information.\r\n' % v).encode()

    def _receive_friendly(self, c: int) -> None:
        if c == CTRL_A:
            self.state = RAW
            self._line.clear()
            self._send(b"\r\n" + RAW_PROMPT)
        elif c == CTRL_B:
            self._send(b"\r\n" + self._banner() + b">>> ")
        elif c in (CTRL_C, ord("\r")):
            self._send(b"\r\n>>> ")
        elif c == CTRL_D:
            self._send(b"\r\n")
            self._soft_reset()
        elif c >= 0x20:
            self._send(bytes([c]))  # echo, as readline does

    def _receive_raw(self, c: int) -> None:
        if c == CTRL_A:
            if len(self._line) == 2 and self._line[0] == CTRL_E:
                self._start_paste(self._line[1])
            else:
                self._line.clear()
                self._send(RAW_PROMPT)
        elif c == CTRL_B:
            self.state = FRIENDLY
            self._line.clear()
            self._send(b"\r\n" + self._banner() + b">>> ")
        elif c == CTRL_C:
            self._line.clear()
        elif c == CTRL_D:
            source = bytes(self._line)
            self._line.clear()
            self._send(b"OK")
            if not source:
                self._send(b"\r\n")
                self._soft_reset()
            else:
                self._execute(source)
        else:
            self._line.append(c)

    def _start_paste(self, command: int) -> None:
        self._line.clear()
        if command != ord("A"):
            self._send(b"R\x00")
            return
        self.state = RAW_PASTE
        self._window_left = self.paste_window
        self._credit = 2 * self.paste_window  # the window size, plus the 0x01 sent with it
        self._credits_owed = 0
        self._send(b"R\x01" + struct.pack("<H", self.paste_window) + b"\x01")

    def _receive_paste(self, c: int) -> None:
        if c in (CTRL_C, CTRL_D):
            self._grant_credits()
            self.state = RAW
            source = bytes(self._line)
            self._line.clear()
            self._send(b"\x04")  # end of data acknowledged, before the code runs
            if c == CTRL_C:
                self._send(b"\x04Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n\x04>")
            else:
                self._execute(source)
            return
        self._credit -= 1
        if self._credit < 0:
            self.paste_overruns += 1
        self._line.append(c)
        self._window_left -= 1
        if self._window_left == 0:
            self._window_left = self.paste_window
            self._credits_owed += 1

    def _grant_credits(self) -> None:
        # Granted once a whole read from the line is consumed, not byte by byte: bytes that
        # arrived together were in flight together, so they must fit the credit the host
        # had before them (as they must fit a real board's stdin buffer).
        if self.state == RAW_PASTE and self._credits_owed:
            self._credit += self.paste_window * self._credits_owed
            self._send(b"\x01" * self._credits_owed)
            self._credits_owed = 0

    def _execute(self, source: bytes) -> None:
        self.snippets.append(source.decode("utf-8", "replace"))
        try:
            out, err = self.interp.run(source)
        except _HardReset:
            self._hard_reset()
            return
        except _SoftReset:
            self._soft_reset()
            return
        self._send(out + b"\x04" + err + b"\x04>")

    # -- resets ----------------------------------------------------------------------
    def _soft_reset(self) -> None:
        self.soft_resets += 1
        self.interp.reset_namespace()
        self._send(b"MPY: soft reboot\r\n")
        # boot.py would run here; main.py only when the friendly REPL is the mode.
        if self.state == FRIENDLY and self.fs.exists("/main.py"):
            self.state = RUNNING
        elif self.state in (RAW, RAW_PASTE):
            self.state = RAW
            self._send(RAW_PROMPT)
        else:
            self._send(self._banner() + b">>> ")

    def _hard_reset(self) -> None:
        self.hard_resets += 1
        self.interp.reset_namespace()
        self._line.clear()
        self.state = RUNNING if self.fs.exists("/main.py") else FRIENDLY
        self.reset_event.set()  # before output: nobody may be reading it any more
        self._send(ROM_BOOT_TEXT)
        if self.state == FRIENDLY:
            self._send(self._banner() + b">>> ")
