#!/usr/bin/env python3
"""Build AquaFog's Debian packages (`make deb`):

    build/aquafog_<version>_all.deb        the software: a wheelhouse for amd64, arm64 and armhf,
                                           turned into /opt/aquafog/venv at install time, no network
    build/aquafog-fog_<version>_all.deb    a fog: the system's Mosquitto set up, aquafog-gateway.service
    build/aquafog-cloud_<version>_all.deb  a cloud: the same with aquafog-cloud.service

Why a wheelhouse and not Debian's Python packages: bookworm ships paho-mqtt 1.6, Flask 2.2
and SQLAlchemy 1.4, all too old. Why `all`: the wheelhouse holds every platform's wheels
and pip picks the one that fits, so one file installs on a PC, a 64-bit and a 32-bit
Raspberry Pi OS. Where PyPI has no wheel for a platform and the package is pure Python
without its optional C speed-ups (PyYAML on armv7l), it is built here from its source
without them; build/wheel-sources.json says where every wheel of every platform came from.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BACKEND = HERE.parent
REPO = BACKEND.parent
# The Raspberry Pi OS Bookworm and Debian 12 machines the packages are for: glibc 2.36, Python 3.11.
PLATFORMS = {
    "x86_64": "amd64",
    "aarch64": "arm64 (Raspberry Pi OS 64-bit)",
    "armv7l": "armhf (Raspberry Pi OS 32-bit)",
}
GLIBC_MINOR = 36
PYTHON = "311"
# What the venv holds besides the runtime: the technician's tools (flash, TLS) and the pure
# PostgreSQL driver (the cloud package brings libpq5); each optional where PyPI lacks a wheel.
EXTRAS = ("tools",)
OPTIONAL = ("psycopg",)
MAINTAINER = "AquaFog developers <aquafog@users.noreply.github.com>"


def version() -> str:
    text = (BACKEND / "aquafog" / "__init__.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"build_deb: {' '.join(cmd[:6])} ... failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    return r


def pip(*args: str, env=None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], env=env)


def platform_args(machine: str) -> list[str]:
    tags = [f"manylinux_2_{m}_{machine}" for m in range(GLIBC_MINOR, 16, -1)] + [f"manylinux2014_{machine}"]
    if machine == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return [x for t in tags for x in ("--platform", t)] + [
        "--python-version", PYTHON, "--implementation", "cp", "--abi", f"cp{PYTHON}", "--abi", "abi3", "--abi", "none"]


def resolve(aquafog_wheel: Path, work: Path) -> dict[str, str]:
    """{name: version} of everything the venv installs, as pip resolves it on this machine."""
    report = work / "resolve.json"
    spec = f"aquafog[{','.join(EXTRAS)}] @ {aquafog_wheel.as_uri()}"
    pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), spec, *OPTIONAL)
    got = json.loads(report.read_text())["install"]
    return {x["metadata"]["name"].lower().replace("_", "-"): x["metadata"]["version"] for x in got}


def retag_pure(whl: Path, dest: Path) -> Path:
    """A wheel built without its C extension, tagged for this machine, re-tagged py3-none-any
    (checked to hold no compiled file)."""
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        compiled = [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
        if compiled:
            raise ValueError(f"{whl.name} holds compiled code ({compiled[0]}): not pure Python")
        dist, ver = whl.name.split("-")[:2]
        out = dest / f"{dist}-{ver}-py3-none-any.whl"
        wheel_meta = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        meta = z.read(wheel_meta).decode()
        meta = re.sub(r"^Root-Is-Purelib: .*$", "Root-Is-Purelib: true", meta, flags=re.M)
        meta = re.sub(r"^Tag: .*\n?", "", meta, flags=re.M).rstrip("\n") + "\nTag: py3-none-any\n"
        digest = base64.urlsafe_b64encode(hashlib.sha256(meta.encode()).digest()).rstrip(b"=").decode()
        rows = [f"{wheel_meta},sha256={digest},{len(meta.encode())}" if r.split(",")[0] == wheel_meta else r
                for r in z.read(record).decode().splitlines()]
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as o:
            for n in names:
                data = meta.encode() if n == wheel_meta else ("\n".join(rows) + "\n").encode() if n == record \
                    else z.read(n)
                o.writestr(z.getinfo(n), data)
    return out


def fetch(name: str, ver: str, machine: str, wheels: Path, work: Path) -> dict:
    """The wheel of name==ver for one platform: PyPI's, else a pure build of its source."""
    before = set(os.listdir(wheels))
    r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "--quiet",
                        "--no-deps", "--only-binary=:all:", *platform_args(machine), "-d", str(wheels),
                        f"{name}=={ver}"], capture_output=True, text=True)
    if r.returncode == 0:
        new = set(os.listdir(wheels)) - before
        file = next(iter(new)) if new else _existing(wheels, name, ver, machine)
        return {"version": ver, "file": file, "source": "PyPI wheel"}
    # No wheel for this platform: pure Python from the source, if the package works without C.
    build = Path(tempfile.mkdtemp(dir=work, prefix=f"pure-{name}-"))
    env = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false", "DISABLE_SQLALCHEMY_CEXT": "1"}
    r2 = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--quiet",
                         "--no-deps", "--no-binary", name, "-w", str(build), f"{name}=={ver}"],
                        capture_output=True, text=True, env=env)
    if r2.returncode == 0:
        built = next(build.glob("*.whl"))
        try:
            out = built if built.name.endswith("-none-any.whl") else retag_pure(built, build)
        except ValueError as exc:
            return {"version": ver, "file": None, "source": "missing", "why": str(exc)}
        target = wheels / out.name
        if not target.exists():
            shutil.copy2(out, target)
        return {"version": ver, "file": out.name, "source": "pure-Python wheel built from the PyPI source"}
    return {"version": ver, "file": None, "source": "missing",
            "why": (r.stderr.strip().splitlines() or ["no wheel"])[-1][:300]}


def _existing(wheels: Path, name: str, ver: str, machine: str) -> str:
    """pip found the file already there (a pure wheel of another platform, or a rerun)."""
    norm = re.sub(r"[-_.]+", "_", name).lower()
    for f in sorted(os.listdir(wheels)):
        low = f.lower()
        if low.startswith(f"{norm}-{ver}-") and (low.endswith("none-any.whl") or machine in low):
            return f
    return "?"


def wheelhouse(wheels: Path, work: Path) -> dict:
    """Every wheel the venv needs on every platform, in `wheels`; returns where each came from."""
    wheels.mkdir(parents=True, exist_ok=True)
    pip("wheel", "--no-deps", "--quiet", "-w", str(wheels), str(BACKEND))
    aquafog_wheel = next(wheels.glob("aquafog-*.whl"))
    pins = resolve(aquafog_wheel, work)
    pins.pop("aquafog", None)
    sources: dict = {m: {"aquafog": {"version": version(), "file": aquafog_wheel.name, "source": "this repository"}}
                     for m in PLATFORMS}
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for machine in PLATFORMS:
            for name, ver in sorted(pins.items()):
                jobs[pool.submit(fetch, name, ver, machine, wheels, work)] = (machine, name)
        for fut in concurrent.futures.as_completed(jobs):
            machine, name = jobs[fut]
            sources[machine][name] = fut.result()
    return {"aquafog": version(), "python": f"{PYTHON[0]}.{PYTHON[1:]}", "glibc": f"2.{GLIBC_MINOR}",
            "platforms": {m: dict(sorted(s.items())) for m, s in sources.items()}}


# --- the packages ----------------------------------------------------------------------------

def control(name: str, ver: str, fields: dict) -> str:
    lines = [f"Package: {name}", f"Version: {ver}", "Architecture: all", f"Maintainer: {MAINTAINER}",
             "Section: net", "Priority: optional", "Homepage: https://github.com/aquafog/aquafog"]
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def package(out: Path, name: str, ver: str, tree: Path, fields: dict, scripts: dict[str, str]) -> Path:
    debian = tree / "DEBIAN"
    debian.mkdir(parents=True, exist_ok=True)
    size_kb = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file()) // 1024 + 1
    (debian / "control").write_text(control(name, ver, {**fields, "Installed-Size": str(size_kb)}))
    for script, text in scripts.items():
        p = debian / script
        p.write_text(text.replace("@VERSION@", ver))
        p.chmod(0o755)
    deb = out / f"{name}_{ver}_all.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)])
    return deb


def install_file(src: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def build(out: Path, work: Path) -> list[Path]:
    ver = version()
    scripts = HERE / "debian"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("aquafog*_all.deb"):  # an earlier version's: one set of packages in out/
        old.unlink()
    debs = []

    base = work / "aquafog"
    sources = wheelhouse(base / "usr/lib/aquafog/wheels", work)
    (out / "wheel-sources.json").write_text(json.dumps(sources, indent=1) + "\n")
    missing = {m: [n for n, s in pkgs.items() if s["source"] == "missing"] for m, pkgs in sources["platforms"].items()}
    (base / "usr/lib/aquafog/wheels/sources.json").write_text(json.dumps(sources, indent=1) + "\n")
    install_file(scripts / "aquafog.sh", base / "usr/bin/aquafog", 0o755)
    docs = base / "usr/share/doc/aquafog"
    for md in sorted((REPO / "docs").glob("*.md")):
        install_file(md, docs / "docs" / md.name)
    install_file(REPO / "README.md", docs / "README.md")
    (docs / "copyright").write_text("AquaFog\nLicense: Apache-2.0\n See /usr/share/common-licenses/Apache-2.0\n")
    debs.append(package(out, "aquafog", ver, base, {
        "Depends": "python3 (>= 3.11), python3-venv, passwd",
        "Recommends": "aquafog-fog | aquafog-cloud",
        "Description": "AquaFog smart water metering: the software of fogs and clouds\n"
                       " The aquafog command and its Python environment (/opt/aquafog/venv), built at\n"
                       " install time from the wheels in this package, without a network. Install\n"
                       " aquafog-fog on a fog gateway (a Raspberry Pi) or aquafog-cloud on the city's server.",
    }, {s: (scripts / f"aquafog.{s}").read_text() for s in ("postinst", "postrm")}))

    for role, unit, depends, extra, description in (
            # procps: /bin/kill, with which Debian's mosquitto.service reloads (new meters' passwords)
            ("fog", "aquafog-gateway.service", "mosquitto (>= 2.0), procps",
             {"Recommends": "mosquitto-clients", "Conflicts": "aquafog-cloud"},
             "AquaFog fog gateway: a secure fog on this machine\n"
             " The system's Mosquitto with per-meter passwords and an ACL, and the AquaFog gateway\n"
             " as a systemd service (aquafog-gateway) storing every reading in SQLite, with its\n"
             " HTTP API and dashboard. `aquafog setup fog` changes its settings."),
            ("cloud", "aquafog-cloud.service", "mosquitto (>= 2.0), procps, libpq5", {"Conflicts": "aquafog-fog"},
             "AquaFog city cloud: the city-wide answers of many fogs\n"
             " The system's Mosquitto with an account per fog confined to its region, and the\n"
             " AquaFog cloud as a systemd service (aquafog-cloud) on SQLite or PostgreSQL.\n"
             " `aquafog setup cloud` adds fogs.")):
        tree = work / f"aquafog-{role}"
        install_file(HERE / "systemd" / unit, tree / "lib/systemd/system" / unit)
        debs.append(package(out, f"aquafog-{role}", ver, tree, {
            "Depends": f"aquafog (= {ver}), {depends}", **extra, "Description": description,
        }, {s: (scripts / f"aquafog-{role}.{s}").read_text() for s in ("postinst", "prerm", "postrm")}))
    return debs, missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "build"), help="where the .deb files go (default build/)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="aquafog-deb-") as tmp:
        debs, missing = build(out, Path(tmp))
    for deb in debs:
        print(f"{deb}  ({deb.stat().st_size / 1e6:.1f} MB)")
    for machine, names in missing.items():
        if names:
            print(f"note: no {PLATFORMS[machine]} wheel for {', '.join(names)}: see {out / 'wheel-sources.json'}")
    print(f"install on a fog: sudo apt install ./{debs[0].name} ./{debs[1].name}  (docs/install-fog.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
