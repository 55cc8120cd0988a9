"""System-test fixtures: fresh Debian 12 roots and containers booted with systemd.

- `amd64_root`, `arm64_root` (session): built roots (debian.build_root) with DOWNLOAD_ONLY
  ready for an offline `apt install`. Both builds start together, in the background, as
  soon as the first test needing one is set up: the arm64 build (qemu) is the long one and
  overlaps the amd64 tests.
- `make_container(name=None, root=None, **kw)` (function): booted Containers (of
  `amd64_root` unless told) on their own 10.213.<n>.0/24, every one stopped at teardown;
  `container`: one amd64 container. A test on arm64 asks for `arm64_root` by name
  (`def test_x(make_container, arm64_root)`: `make_container(root=arm64_root)`), which
  is how the session knows to start that build early; give it @pytest.mark.timeout(600).
- `timings.record(what, seconds)`: printed at the end and written to
  test-artifacts/system-timings.txt.

Needs root (skipped otherwise, saying so). A missing tool fails the test and names the
Debian package to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from .container import Container, free_subnet_index
from .debian import BASE_INCLUDE, DOWNLOAD_ONLY, build_root
from .tools import MissingTool

REPO = Path(__file__).resolve().parents[2]
ROOT_FIXTURES = {"amd64_root": "amd64", "arm64_root": "arm64"}
# The amd64 root leaves AquaFog's dependencies to the offline install, as on a fresh Pi.
# Under qemu that install takes over a minute, so the arm64 root has them installed at
# build time, which overlaps the amd64 tests instead of adding to the run.
INCLUDE = {"amd64": BASE_INCLUDE, "arm64": BASE_INCLUDE + DOWNLOAD_ONLY}

_TIMINGS: list[tuple[str, float]] = []


@pytest.fixture(autouse=True)
def _need_root():
    if os.geteuid() != 0:
        pytest.skip("system tests boot containers with systemd-nspawn: run them as root")


class Timings:
    def record(self, what: str, seconds: float) -> None:
        _TIMINGS.append((what, seconds))


@pytest.fixture(scope="session")
def timings() -> Timings:
    return Timings()


def pytest_terminal_summary(terminalreporter):
    if not _TIMINGS:
        return
    lines = [f"{what:<40} {s:7.1f} s" for what, s in _TIMINGS]
    terminalreporter.write_sep("=", "system test timings")
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(os.environ.get("AQUAFOG_ARTIFACTS") or REPO / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    (out / "system-timings.txt").write_text("\n".join(lines) + "\n")


class _Builds:
    """Root builds running in background threads, one per architecture."""

    def __init__(self, arches):
        self.arches = arches or ["amd64"]
        self.dir = Path(tempfile.mkdtemp(prefix="aquafog-roots-", dir="/var/tmp"))
        self.pool = ThreadPoolExecutor(max_workers=len(self.arches))
        self.futures: dict[str, Future] = {}

    def get(self, arch: str) -> Path:
        if not self.futures:
            for a in self.arches:
                self.futures[a] = self.pool.submit(self._build, a)
        if arch not in self.futures:
            self.futures[arch] = self.pool.submit(self._build, arch)
        try:
            root, seconds = self.futures[arch].result()
        except MissingTool as e:
            pytest.fail(str(e), pytrace=False)
        _TIMINGS.append((f"build {arch} root", seconds))
        return root

    def _build(self, arch: str):
        t0 = time.monotonic()
        root = build_root(self.dir / arch, arch=arch, include=INCLUDE[arch],
                          download_only=DOWNLOAD_ONLY, log=self.dir / f"{arch}.log")
        return root, time.monotonic() - t0

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        shutil.rmtree(self.dir, ignore_errors=True)  # roots are never reused across runs


@pytest.fixture(scope="session")
def _root_builds(request):
    if os.geteuid() != 0:
        pytest.skip("system tests boot containers with systemd-nspawn: run them as root")
    # The roots the selected tests need (after -k and the like), all started at the first use.
    arches = sorted({arch for item in request.session.items for fx, arch in ROOT_FIXTURES.items()
                     if fx in getattr(item, "fixturenames", ())})
    builds = _Builds(arches)
    yield builds
    builds.close()


@pytest.fixture(scope="session")
def amd64_root(_root_builds) -> Path:
    return _root_builds.get("amd64")


@pytest.fixture(scope="session")
def arm64_root(_root_builds) -> Path:
    return _root_builds.get("arm64")


@pytest.fixture
def make_container(request, tmp_path, timings):
    """make_container(name=None, root=amd64_root, binds=(), binds_ro=()) -> a booted
    Container."""
    made: list[Container] = []

    def make(name: str | None = None, root: Path | None = None, **kw) -> Container:
        root = root or request.getfixturevalue("amd64_root")
        name = name or f"c{len(made)}"
        try:
            c = Container(root, name, free_subnet_index(), workdir=tmp_path / name, **kw)
        except MissingTool as e:
            pytest.fail(str(e), pytrace=False)
        made.append(c)
        c.start()
        timings.record(f"boot {c.arch} ({request.node.name})", c.timings["boot"])
        return c

    yield make
    errors = []
    for c in made:  # every one, even if stopping another failed
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001 - raised below, after the others
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def container(make_container) -> Container:
    return make_container("fog")


@pytest.fixture(scope="session")
def debs(tmp_path_factory, timings) -> Path:
    """The packages, built by the fog guide's first command (`make deb`) on this machine."""
    from .guide import RAN, guide
    cmd = guide("make deb")
    RAN.add(cmd)
    t0 = time.monotonic()
    r = subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    timings.record("make deb", time.monotonic() - t0)
    out = tmp_path_factory.mktemp("debs")
    for deb in (REPO / "build").glob("aquafog*_all.deb"):
        shutil.copy2(deb, out)
    assert sorted(p.name.split("_")[0] for p in out.iterdir()) == ["aquafog", "aquafog-cloud", "aquafog-fog"]
    return out
