"""Headless Chromium for the browser tests: Debian's chromium and chromium-driver, driven by
Selenium through the system chromedriver (never a driver downloaded at run time).

`launch(kind, ...)` starts one browser and returns a `Browser`: the Selenium WebDriver
(every WebDriver method works on it) plus what the tests need on top: `wait_for`,
`screenshot`, and the browser console (`console`, `console_errors`,
`assert_no_console_errors`). The fixtures in conftest.py use it.

The browser only reaches this machine: `--host-resolver-rules` makes every host name and
address except localhost and 127.0.0.1 fail with net::ERR_NAME_NOT_RESOLVED, so a page that
needs a CDN (or anything on the internet) breaks visibly in the tests (a console error)
instead of working by accident, and Chromium's own background traffic goes nowhere.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Selenium only runs selenium-manager (which downloads drivers and browsers) when it is given
# no driver path; we always give one. SE_OFFLINE is a second lock on that door.
os.environ.setdefault("SE_OFFLINE", "true")

REPO = Path(__file__).resolve().parents[2]

DESKTOP = (1366, 900)
PHONE = {"width": 390, "height": 844, "pixelRatio": 3.0, "mobile": True, "touch": True}
PHONE_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/{major}.0.0.0 Mobile Safari/537.36")

# Everything but this machine's loopback fails to resolve (IP literals included).
HOST_RESOLVER_RULES = "MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"

INSTALL_HINT = ("the browser tests need Debian's chromium and chromium-driver: run `make deps` "
                "(as root) or `sudo apt-get install -y chromium chromium-driver`")


class BrowserMissing(RuntimeError):
    pass


@dataclass
class Binaries:
    chromium: str
    chromedriver: str


def _find(env: str, names: tuple[str, ...], default: str) -> str | None:
    if os.environ.get(env):
        p = os.environ[env]
        return p if os.path.isfile(p) and os.access(p, os.X_OK) else None
    if os.path.isfile(default) and os.access(default, os.X_OK):
        return default
    for name in names:
        if found := shutil.which(name):
            return found
    return None


def find_binaries() -> Binaries:
    """Chromium and chromedriver: $AQUAFOG_CHROMIUM / $AQUAFOG_CHROMEDRIVER when set, else
    Debian's /usr/bin/chromium and /usr/bin/chromedriver, else PATH. Raises BrowserMissing
    saying what to install."""
    chromium = _find("AQUAFOG_CHROMIUM", ("chromium", "chromium-browser"), "/usr/bin/chromium")
    driver = _find("AQUAFOG_CHROMEDRIVER", ("chromedriver",), "/usr/bin/chromedriver")
    missing = [what for what, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    if missing:
        overrides = [f"${e}={os.environ[e]}" for e in ("AQUAFOG_CHROMIUM", "AQUAFOG_CHROMEDRIVER")
                     if os.environ.get(e)]
        raise BrowserMissing(f"{' and '.join(missing)} not found"
                             + (f" (with {', '.join(overrides)})" if overrides else "")
                             + f"; {INSTALL_HINT}")
    return Binaries(chromium, driver)


@functools.lru_cache(maxsize=None)
def chromium_major(chromium: str) -> str:
    """The major version, for a phone user agent that matches the real browser."""
    try:
        out = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=30).stdout
        return re.search(r"(\d+)\.\d+\.\d+", out).group(1)
    except Exception:
        return "120"


def chrome_options(kind: str, profile_dir: Path, binaries: Binaries, major: str):
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = binaries.chromium
    for arg in (
        "--headless=new",
        # the tests run as root (CI, containers), where Chromium refuses to start sandboxed;
        # the browser only ever loads pages from 127.0.0.1 (see HOST_RESOLVER_RULES)
        "--no-sandbox",
        "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm
        "--disable-gpu",
        f"--user-data-dir={profile_dir}",  # a fresh profile: no cookies, cache or storage
        f"--host-resolver-rules={HOST_RESOLVER_RULES}",
        "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
        "--disable-extensions", "--disable-sync", "--disable-background-networking",
        "--disable-component-update", "--disable-domain-reliability", "--disable-breakpad",
        "--disable-client-side-phishing-detection", "--metrics-recording-only",
        "--password-store=basic", "--use-mock-keychain",
        "--disable-features=Translate,OptimizationHints,MediaRouter,PasswordLeakDetection",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    if kind == "phone":
        opts.add_experimental_option("mobileEmulation", {
            "deviceMetrics": PHONE, "userAgent": PHONE_UA.format(major=major),
            "clientHints": {"platform": "Android", "mobile": True},
        })
    else:
        opts.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    # console messages, uncaught exceptions and failed loads, read with driver.get_log("browser")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


class Browser:
    """A Selenium WebDriver (attributes not defined here are the driver's) with helpers."""

    def __init__(self, driver, kind: str, screenshot_dir: Path, prefix: str, saved: list[Path]):
        self.driver = driver
        self.kind = kind
        self._screenshot_dir = screenshot_dir
        self._prefix = prefix
        self._saved = saved
        self._console: list[dict] = []

    def __getattr__(self, name):
        return getattr(self.driver, name)

    # -- pages -----------------------------------------------------------------------

    def open(self, url: str) -> "Browser":
        self.driver.get(url)
        return self

    def text(self, css: str = "body") -> str:
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def viewport(self) -> tuple[int, int]:
        w, h = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        return int(w), int(h)

    def wait_for(self, condition, what: str = "", timeout: float = 10.0):
        """Wait until condition(driver) is truthy (a callable, or one of Selenium's
        expected_conditions) and return its value. WebDriverWait polls; no sleeps. On timeout
        an AssertionError names what was awaited and shows the page's URL and text."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition)
        except TimeoutException:
            try:
                page = f"{self.driver.current_url}: {self.text()[:800]!r}"
            except Exception as exc:  # the page itself may be the problem
                page = f"(page unreadable: {exc})"
            raise AssertionError(f"timed out after {timeout} s waiting for "
                                 f"{what or getattr(condition, '__name__', repr(condition))}; page {page}") from None

    def wait_for_text(self, text: str, css: str = "body", timeout: float = 10.0) -> str:
        """Wait until the element at `css` shows `text`; return the element's whole text."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        def shown(_driver):
            try:
                t = self.text(css)
            except (NoSuchElementException, StaleElementReferenceException):
                return False
            return t if text in t else False
        return self.wait_for(shown, f"{text!r} in {css!r}", timeout)

    # -- artifacts -------------------------------------------------------------------

    def screenshot(self, name: str) -> Path:
        """Save the visible viewport as <artifacts>/screenshots/<test>-<name>[-phone].png."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "shot"
        suffix = "" if self.kind == "desktop" else f"-{self.kind}"
        self._screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self._screenshot_dir / f"{self._prefix}-{safe}{suffix}.png"
        if not self.driver.save_screenshot(str(path)):
            raise AssertionError(f"could not save the screenshot {path}")
        if path not in self._saved:
            self._saved.append(path)
        return path

    # -- console ---------------------------------------------------------------------

    def console(self) -> list[dict]:
        """Every browser log entry since the browser started (Chromium hands each one out
        once, so they are kept here): dicts with level (SEVERE for console.error,
        uncaught exceptions and failed loads; WARNING; INFO for console.log), message,
        source (console-api, javascript, network, ...) and timestamp (ms)."""
        self._console.extend(self.driver.get_log("browser"))
        return list(self._console)

    def console_errors(self, ignore=()) -> list[dict]:
        """The SEVERE entries, minus those whose message matches one of the `ignore` regexes."""
        pats = [re.compile(p) for p in ignore]
        return [e for e in self.console()
                if e["level"] == "SEVERE" and not any(p.search(e["message"]) for p in pats)]

    def assert_no_console_errors(self, ignore=()) -> None:
        errors = self.console_errors(ignore)
        assert not errors, "browser console errors:\n" + "\n".join(f"  {e['source']}: {e['message']}" for e in errors)

    def clear_console(self) -> None:
        self.console()
        self._console.clear()


def launch(kind: str, profile_dir: Path, screenshot_dir: Path, prefix: str, saved: list[Path],
           binaries: Binaries | None = None) -> Browser:
    """Start headless Chromium ("desktop": 1366x900 viewport, or "phone": 390x844 at 3x, touch,
    a mobile user agent) with a fresh profile in profile_dir."""
    if kind not in ("desktop", "phone"):
        raise ValueError(f"unknown browser kind {kind!r} (desktop or phone)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binaries = binaries or find_binaries()
    profile_dir.mkdir(parents=True, exist_ok=True)
    opts = chrome_options(kind, profile_dir, binaries, chromium_major(binaries.chromium))
    service = Service(executable_path=binaries.chromedriver, log_output=str(profile_dir.with_name(profile_dir.name + "-chromedriver.log")))
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        driver.set_page_load_timeout(30)
        b = Browser(driver, kind, screenshot_dir, prefix, saved)
        if kind == "desktop":
            # --window-size is the outer window; make the page's viewport exactly DESKTOP
            w, h = b.viewport()
            size = driver.get_window_size()
            driver.set_window_size(size["width"] + DESKTOP[0] - w, size["height"] + DESKTOP[1] - h)
        return b
    except BaseException:
        driver.quit()
        raise
