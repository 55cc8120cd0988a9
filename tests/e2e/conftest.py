"""Browser-test fixtures (see README.md in this folder).

- `browser`: headless Chromium, desktop viewport 1366x900, fresh profile;
- `phone`: the same as a phone (390x844 at 3x, touch, mobile user agent);
- `make_browser(kind="desktop"|"phone")`: more browsers in one test (an operator and a
  consumer side by side), each with its own fresh profile;
- `gateway`: a real Mosquitto and a real `aquafog gateway` process (its API at gateway.url).

Each browser has `wait_for`, `wait_for_text`, `screenshot(name)` and the console helpers
(browser.py). Screenshots go to test-artifacts/screenshots/ (or $AQUAFOG_ARTIFACTS/screenshots/)
and are listed at the end of the run. When a test fails, every browser it opened saves a
screenshot, its page source and its console log there, named <test>-FAILED*.

Missing chromium or chromedriver make these tests fail, naming what to install: they are
never skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .browser import REPO, BrowserMissing, find_binaries, launch

SAVED: list[Path] = []  # every screenshot of this session, in order


def artifacts_dir() -> Path:
    return Path(os.environ.get("AQUAFOG_ARTIFACTS") or REPO / "test-artifacts")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """test-artifacts/screenshots/, emptied of the previous run's files at the first use."""
    d = artifacts_dir() / "screenshots"
    if d.is_dir():
        for f in d.iterdir():
            if f.is_file() and f.suffix in (".png", ".html", ".txt"):
                f.unlink()
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def make_browser(request, tmp_path):
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is not installed in this environment: run `make deps` "
                    "(or `.venv/bin/pip install -e 'backend[dev]'`)", pytrace=False)
    try:
        binaries = find_binaries()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    shots = request.getfixturevalue("screenshot_dir")
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    opened = []

    def make(kind: str = "desktop"):
        b = launch(kind, tmp_path / f"chromium-{kind}-{len(opened)}", shots, prefix, SAVED, binaries)
        opened.append(b)
        return b
    yield make

    rep = getattr(request.node, "rep_call", None)
    failed = rep is not None and rep.failed
    for i, b in enumerate(opened):
        try:
            if failed:
                _save_failure(b, "FAILED" + (f"-{i}" if len(opened) > 1 else ""))
        finally:
            b.quit()


def _save_failure(b, name: str) -> None:
    """What a person needs to see why a browser test failed: the screen, the page source
    and the console, as <test>-FAILED[-i][-phone].png, .html and .console.txt."""
    try:
        png = b.screenshot(name)
        png.with_suffix(".html").write_text(b.page_source)
        png.with_suffix(".console.txt").write_text(
            f"url: {b.current_url}\n" + "".join(f"{e['level']} {e['source']}: {e['message']}\n" for e in b.console()))
    except Exception as exc:  # the browser may be what broke
        print(f"could not save the failure artifacts ({name}): {exc}")


@pytest.fixture
def browser(make_browser):
    """Headless Chromium, 1366x900 viewport, fresh profile."""
    return make_browser("desktop")


@pytest.fixture
def phone(make_browser):
    """Headless Chromium as a phone: 390x844 CSS pixels at 3x, touch, mobile user agent."""
    return make_browser("phone")


@pytest.fixture
def gateway(tmp_path, broker):
    """A real `aquafog gateway` process on a real Mosquitto (the `broker` fixture), healthy."""
    from integration.gatewayproc import GatewayProcess

    gw = GatewayProcess(tmp_path / "gateway", broker.port, ["e2e-m1", "e2e-m2"]).start()
    yield gw
    gw.stop()


def pytest_terminal_summary(terminalreporter):
    if not SAVED:
        return
    here = Path.cwd()
    terminalreporter.write_sep("-", f"browser screenshots: {len(SAVED)} in {_rel(SAVED[0].parent, here)}/")
    for p in SAVED:
        terminalreporter.write_line(f"  {_rel(p, here)}")


def _rel(p: Path, base: Path) -> str:
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)
