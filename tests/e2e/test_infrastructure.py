"""The browser-test infrastructure itself, against what the servers serve today: a real
Mosquitto and a real gateway process, seen through headless Chromium (desktop and phone),
screenshots, the console (so dashboard tests can assert "no console errors"), fresh
profiles, no way out to the internet, and a clear failure when Chromium is missing."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest

from .browser import DESKTOP, REPO, BrowserMissing, find_binaries

# The gateway's API has no favicon (the dashboard will serve one); Chromium asks for it
# and logs the 404 as a console error.
NO_FAVICON = (r"/favicon\.ico - Failed to load resource",)


def test_health_page_desktop_and_phone(gateway, browser, phone):
    url = gateway.url + "/health"
    expected = gateway.get("/health")
    assert expected["status"] == "ok"

    browser.open(url)
    # Chromium shows a JSON answer as its text in a <pre>
    shown = json.loads(browser.wait_for_text('"status"', css="pre"))
    assert shown["status"] == "ok"
    assert shown.keys() == expected.keys()
    assert browser.viewport() == DESKTOP
    png = browser.screenshot("health")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000
    browser.assert_no_console_errors(ignore=NO_FAVICON)
    # the system chromedriver, never one downloaded by selenium-manager
    assert browser.service.path == find_binaries().chromedriver

    phone.open(url)
    assert json.loads(phone.wait_for_text('"status"', css="pre"))["status"] == "ok"
    # screen, not innerWidth: a page without <meta name="viewport"> (like this JSON) is laid
    # out 980 px wide and zoomed out, as on a real phone
    width, height, mobile_ua, touch, dpr = phone.execute_script(
        "return [screen.width, screen.height, /Mobile/.test(navigator.userAgent),"
        " matchMedia('(pointer: coarse)').matches, devicePixelRatio]")
    assert (width, height, mobile_ua, touch, dpr) == (390, 844, True, True, 3)
    assert phone.screenshot("health").name.endswith("-health-phone.png")
    phone.assert_no_console_errors(ignore=NO_FAVICON)


@pytest.fixture
def site(tmp_path):
    """A tiny static web server on 127.0.0.1 for pages written by the test."""
    root = tmp_path / "site"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.root = root
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join()


# <link rel="icon" href="data:,"> keeps Chromium from asking for /favicon.ico
PAGE = '<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,"><title>{title}</title></head><body>{body}</body></html>'


def test_console_errors_are_detected(site, browser):
    (site.root / "clean.html").write_text(PAGE.format(
        title="clean", body='<p id="out">rendered</p><script>console.log("hello"); console.warn("careful")</script>'))
    (site.root / "broken.html").write_text(PAGE.format(title="broken", body=(
        # a script from "a CDN" (any host but this machine's loopback is unreachable)
        f'<script src="http://127.0.0.2:{site.server_address[1]}/lib.js"></script>'
        '<p id="out">rendered</p>'
        '<script>console.error("dashboard: boom");'
        ' setTimeout(function () { null.draw(); }, 50);</script>')))

    browser.open(site.url + "/clean.html")
    browser.wait_for_text("rendered", css="#out")
    levels = {(e["level"], e["message"].rsplit(" ", 1)[-1]) for e in browser.console()}
    assert ('INFO', '"hello"') in levels and ('WARNING', '"careful"') in levels
    browser.assert_no_console_errors()

    browser.open(site.url + "/broken.html")
    browser.wait_for(lambda d: any("TypeError" in e["message"] for e in browser.console_errors()),
                     "the uncaught TypeError in the console")
    errors = {e["source"]: e["message"] for e in browser.console_errors()}
    assert '"dashboard: boom"' in errors["console-api"]
    assert "Uncaught TypeError" in errors["javascript"]
    assert "lib.js" in errors["network"] and "ERR_NAME_NOT_RESOLVED" in errors["network"]
    with pytest.raises(AssertionError, match="(?s)browser console errors:.*dashboard: boom.*Uncaught TypeError"):
        browser.assert_no_console_errors()
    browser.screenshot("broken-page")


def test_each_browser_has_a_fresh_profile(site, make_browser):
    from selenium.webdriver.common.by import By  # here: without selenium, the fixture says what to install

    (site.root / "p.html").write_text(PAGE.format(title="p", body='<p id="out">p</p>'))
    first, second = make_browser(), make_browser("phone")
    first.open(site.url + "/p.html")
    first.execute_script("localStorage.setItem('k', 'v'); document.cookie = 'session=abc; path=/'")
    first.refresh()
    assert first.execute_script("return [localStorage.getItem('k'), document.cookie]") == ["v", "session=abc"]
    second.open(site.url + "/p.html")
    assert second.execute_script("return [localStorage.getItem('k'), document.cookie]") == [None, ""]
    assert second.find_element(By.ID, "out").text == "p"
    assert second.viewport() == (390, 844)  # the page has <meta name="viewport" content="width=device-width">


def test_no_way_out_but_loopback(site, browser):
    from selenium.common.exceptions import WebDriverException

    (site.root / "ok.html").write_text(PAGE.format(title="ok", body='<p id="out">ok</p>'))
    browser.open(site.url + "/ok.html").wait_for_text("ok", css="#out")
    # 127.0.0.2 is this machine too, but not excluded: it stands for any host on the internet
    port = site.server_address[1]
    for url in (f"http://127.0.0.2:{port}/ok.html", f"http://cdn.example.com:{port}/ok.html"):
        with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):
            browser.open(url)


def test_wait_for_times_out_with_the_page_in_the_message(site, browser):
    (site.root / "w.html").write_text(PAGE.format(title="w", body='<p id="out">waiting</p>'))
    browser.open(site.url + "/w.html")
    with pytest.raises(AssertionError, match=r"timed out after 0.3 s waiting for 'done' in '#out'; page http.*waiting"):
        browser.wait_for_text("done", css="#out", timeout=0.3)


def test_missing_chromium_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("AQUAFOG_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(BrowserMissing, match=r"chromium not found .*apt-get install -y chromium chromium-driver"):
        find_binaries()

    # and a browser test then fails (never skips), saying what to install
    env = {**os.environ, "AQUAFOG_CHROMIUM": str(tmp_path / "no-chromium"), "AQUAFOG_ARTIFACTS": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "tests/e2e/test_infrastructure.py::test_no_way_out_but_loopback"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 error" in out.stdout and "skipped" not in out.stdout, out.stdout
    assert "apt-get install -y chromium chromium-driver" in out.stdout, out.stdout
