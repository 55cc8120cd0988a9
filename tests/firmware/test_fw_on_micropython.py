"""The firmware's logic on real MicroPython 1.27 (the WebAssembly port from npm, run by Node).

CPython is forgiving where MicroPython is not (big-int corners, str/bytes methods, json);
this runs the vectors, the register, outbox, valve, config and the app on a fake board
inside MicroPython itself (tools/mpwasm).
"""

from pathlib import Path

import pytest

import mpwasm
import shared_cases

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture(scope="session")
def micropython_wasm():
    return mpwasm.ensure()  # `make test` installs Node and npm: missing them is a failure, not a skip


def run_on_micropython(node, script, *data):
    return mpwasm.run(node, REPO / "firmware", script, *data)


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
