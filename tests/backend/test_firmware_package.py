"""The meter firmware inside the aquafog package (aquafog/firmware.py): the files `aquafog
flash` copies, the validator provisioning uses, loaded once per process, and a real
wheel that holds the firmware and never firmware/meters (the meters' secrets)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from aquafog import firmware

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
NO_METER_ID = "meter_id: required, 1-32 characters of a-z 0-9 _ - starting with a letter or digit"


def test_the_shipped_firmware_is_the_repositorys():
    d = firmware.path()
    assert d == FIRMWARE  # a checkout: the symlink leads to firmware/
    assert (d / "main.py").is_file() and (d / "config.example.json").is_file()
    assert sorted(p.name for p in (d / "aquameter").glob("*.py")) == \
        sorted(p.name for p in (FIRMWARE / "aquameter").glob("*.py"))
    assert firmware.checkout_meters_dir() == FIRMWARE / "meters"


def test_the_validator_is_the_firmwares_own_module_loaded_once():
    import aquameter.config  # as the emulator and the firmware tests import it (firmware/ on sys.path)

    assert firmware.config_module() is aquameter.config
    assert firmware.validate({"meter_id": "m1"}) == aquameter.config.validate({"meter_id": "m1"})
    example = json.loads((firmware.path() / "config.example.json").read_text())
    assert firmware.validate(example)[1] == []


def run_python(code: str, cwd: Path) -> list[str]:
    """`code` in a fresh Python without pytest's sys.path (no firmware/ on it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_without_the_firmware_on_sys_path_it_is_loaded_from_the_package(tmp_path):
    out = run_python("import sys, aquafog.firmware as f\n"
                     "print(f.validate({})[1][0])\n"
                     "print(sys.modules['aquameter'].__file__)\n"
                     "import aquameter.config\n"
                     "print(aquameter.config is f.config_module())\n", tmp_path)
    assert out == [NO_METER_ID, str(FIRMWARE / "aquameter" / "__init__.py"), "True"]


def test_another_aquameter_already_loaded_is_left_alone(tmp_path):
    other = tmp_path / "aquameter"
    other.mkdir()
    (other / "__init__.py").write_text("")
    (other / "config.py").write_text("def validate(raw):\n    return raw, ['not the firmware']\n")
    out = run_python("import sys, aquameter.config, aquafog.firmware as f\n"
                     "print(f.validate({})[1][0])\n"
                     "print(sys.modules['aquameter'].__file__)\n"
                     "print(f.config_module() is aquameter.config)\n", tmp_path)
    assert out == [NO_METER_ID, str(other / "__init__.py"), "False"]


def test_the_wheel_holds_the_firmware_and_never_the_meters_configs(tmp_path):
    """A real wheel, built from a copy of backend/ and firmware/ whose firmware/meters holds a
    provisioned meter (with build isolation: setuptools from the package index)."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "backend", tree / "backend", symlinks=True,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    shutil.copytree(FIRMWARE, tree / "firmware", ignore=shutil.ignore_patterns("meters", "__pycache__"))
    (tree / "firmware" / "meters" / "m0001").mkdir(parents=True)
    (tree / "firmware" / "meters" / "m0001" / "config.json").write_text('{"mqtt_password": "secret"}')
    assert (tree / "backend" / "aquafog" / "meter_firmware").is_symlink()
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "out"),
                        str(tree / "backend")], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "No matching distribution found for setuptools" in r.stderr:
        pytest.skip("no package index to build with: " + r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "out").glob("aquafog-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if "meter_firmware" in n)
    modules = [f"aquafog/meter_firmware/aquameter/{p.name}" for p in (FIRMWARE / "aquameter").glob("*.py")]
    assert shipped == sorted(["aquafog/meter_firmware/main.py", "aquafog/meter_firmware/config.example.json", *modules])
    assert not [n for n in names if "meters" in n.split("/") or "secret" in n or n.endswith("README.md")]
    assert "aquafog/firmware.py" in names and "aquafog/provisioning/provisioner.py" in names
    assert "aquafog/flash.py" in names and "aquafog/cli/field.py" in names
