"""Real MicroPython 1.27 (the WebAssembly port from npm) run by Node, for the firmware
tests and the heap benchmark. The npm package is installed into build/mpwasm on first use.

    node = mpwasm.ensure()                       # MpWasmUnavailable if Node/npm are missing
    proc = mpwasm.run(node, firmware_dir, script, *extra_files)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "@micropython/micropython-webassembly-pyscript"
VERSION = "1.27.0"
MODULE_DIR = Path(os.environ.get("AQUAFOG_MPWASM_DIR", REPO / "build" / "mpwasm"))
RUNNER = Path(__file__).resolve().parent / "runner.mjs"


class MpWasmUnavailable(RuntimeError):
    pass


def ensure() -> str:
    """Path of node, with the package installed; raises MpWasmUnavailable saying what to install."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise MpWasmUnavailable("Node.js and npm are needed to run real MicroPython: apt-get install nodejs npm")
    installed = MODULE_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
    if not installed.exists():
        MODULE_DIR.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([npm, "install", "--prefix", str(MODULE_DIR), "--no-audit", "--no-fund",
                               "--no-save", "%s@%s" % (PACKAGE, VERSION)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not installed.exists():
            raise MpWasmUnavailable("npm install %s@%s failed:\n%s" % (PACKAGE, VERSION, proc.stderr))
    return node


def run(node: str, firmware_dir: Path, script: Path, *extra: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `script` on MicroPython with firmware_dir/aquameter (.py or .mpy) importable."""
    return subprocess.run([node, str(RUNNER), str(MODULE_DIR), str(firmware_dir), str(script), *map(str, extra)],
                          capture_output=True, text=True, timeout=timeout)
