"""The firmware's logic on real MicroPython 1.27 (the WebAssembly port from npm, run by Node).

CPython is forgiving where MicroPython is not (big-int corners, str/bytes methods, json);
this runs the vectors, the register, outbox, valve, config and the app on a fake board
inside MicroPython itself. The npm package is installed on first use into build/.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import shared_cases

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE = "@micropython/micropython-webassembly-pyscript"
VERSION = "1.27.0"
MODULE_DIR = Path(os.environ.get("AQUAFOG_MPWASM_DIR", REPO / "build" / "mpwasm"))


@pytest.fixture(scope="session")
def micropython_wasm():
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        pytest.skip("Node.js and npm are needed to run real MicroPython: apt-get install nodejs npm")
    installed = MODULE_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
    if not installed.exists():
        MODULE_DIR.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([npm, "install", "--prefix", str(MODULE_DIR), "--no-audit", "--no-fund",
                               "--no-save", "%s@%s" % (PACKAGE, VERSION)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and installed.exists(), "npm install %s failed:\n%s" % (PACKAGE, proc.stderr)
    return node


def run_on_micropython(node, script, *data):
    return subprocess.run([node, str(HERE / "mp_runner.mjs"), str(MODULE_DIR), str(REPO / "firmware"), str(script),
                           *map(str, data)], capture_output=True, text=True, timeout=120)


def test_firmware_logic_passes_on_real_micropython(micropython_wasm):
    vectors = REPO / "tests" / "vectors"
    proc = run_on_micropython(micropython_wasm, HERE / "mp_checks.py", vectors / "mqtt_v1.json",
                              vectors / "firmware_v1.json", HERE / "shared_cases.py", HERE / "fakeboard.py",
                              HERE / "fakemachine.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MICROPYTHON-CHECKS-OK" in proc.stdout
    # every shared case ran there too, the same functions as on CPython
    assert int(proc.stdout.split("SHARED-CASES")[1].split()[0]) == len(shared_cases.all_cases())
    assert int(proc.stdout.split("MICROPYTHON-CHECKS-OK")[1].split()[0]) >= 30 + len(shared_cases.all_cases())


def test_the_runner_reports_micropython_failures(micropython_wasm, tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("import sys\nassert sys.implementation.name == 'micropython'\nx = f'{1}' if False else None\n"
                      "from dataclasses import dataclass\n")
    proc = run_on_micropython(micropython_wasm, script)
    assert proc.returncode != 0
    assert "dataclasses" in proc.stderr
