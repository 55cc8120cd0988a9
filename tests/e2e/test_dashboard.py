"""The web UI in a real browser against a real gateway, broker and emulated meters (the real
firmware): an operator watches the live top-N table and a meter's live charts and blocks the
meter until the ledger says applied; an admin edits the policy; a consumer sees only their
own meters and bill, and is refused another meter. Screenshots of every main page, desktop
and phone, go to test-artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest

from .rig import CONSUMER_METERS, RATES, Rig, alerts_served, attr, fetch_status, js, login, no_sideways_scroll, publish_health

# the one console error a refused page may show: the browser logs the API's 403 for the meter
REFUSED = (r"/api/v1/meters/w01\S* - Failed to load resource: the server responded with a status of 403",)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("city-block"))
    yield r
    r.stop()


def served(browser, feature: str) -> bool:
    """Whether the page was told this app serves `feature` (web/__init__.py FEATURES)."""
    return bool(js(browser, "return JSON.parse(document.getElementById('boot').textContent).features[arguments[0]] || null",
                   feature))


def rows(browser) -> list[tuple[str, float]]:
    return [(m, float(v)) for m, v in js(browser, "return [...document.querySelectorAll('#ranking tbody tr')]"
                                                  ".map(r => [r.dataset.meter, r.dataset.litres])")]


def test_operator_watches_the_live_top_n_and_a_meter_and_blocks_it(rig, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    login(browser, rig.base, "olga")
    assert browser.current_url == rig.base + "/"
    browser.wait_for(lambda d: len(rows(browser)) >= 4, "the ranking")
    # the fog's live ranking stream (polling GET /ranking at a gateway without it)
    assert attr(browser, "#ranking-source", "data-mode") == ("live" if served(browser, "ranking_live") else "polling")
    # N chosen by the user
    n = browser.find_element(By.ID, "top-n")
    n.send_keys(Keys.CONTROL, "a")
    n.send_keys("3", Keys.TAB)
    browser.wait_for(lambda d: [m for m, _ in rows(browser)] == ["w01", "w02", "w03"], "the top 3, w01 first")
    first = rows(browser)
    # the table follows the meters' water without a reload
    browser.wait_for(lambda d: all(now > before for (_, now), (_, before) in zip(rows(browser), first)),
                     "every litre figure of the top 3 going up", timeout=10)
    assert js(browser, "return performance.getEntriesByType('navigation').length") == 1
    browser.screenshot("dashboard")

    browser.find_element(By.LINK_TEXT, "w01").click()
    browser.wait_for(lambda d: d.current_url.endswith("/meters/w01"), "the meter page")
    live = "live" if served(browser, "meter_live") else "polling"
    browser.wait_for(lambda d: attr(browser, "#live-source", "data-mode") == live, f"the meter's {live} updates")
    browser.wait_for(lambda d: int(attr(browser, "#register-chart svg", "data-count") or 0) >= 2, "history charted")
    count = int(attr(browser, "#register-chart svg", "data-count"))
    last = float(attr(browser, "#register-chart svg", "data-last"))
    browser.wait_for(lambda d: int(attr(browser, "#register-chart svg", "data-count")) >= count + 2
                     and float(attr(browser, "#register-chart svg", "data-last")) > last, "the register chart moving")
    assert float(attr(browser, "#flow-chart svg", "data-last")) > 0
    browser.wait_for_text("online", css="#online")
    browser.screenshot("meter")

    browser.find_element(By.ID, "block").click()
    browser.wait_for(lambda d: attr(browser, "#command-state", "data-status") == "applied", "the block applied",
                     timeout=10)
    assert "applied: the meter confirmed" in browser.text("#command-state")
    assert rig.fleet.meter("w01").relay_closed
    browser.wait_for_text("reported closed", css="#valve")
    cid = browser.find_element(By.CSS_SELECTOR, "#commands tbody tr").get_attribute("data-command")
    assert rig.gateway.get(f"/commands/{cid}")["command"]["status"] == "applied"
    browser.screenshot("meter-blocked")

    browser.find_element(By.ID, "unblock").click()
    browser.wait_for(lambda d: attr(browser, "#command-state", "data-status") == "applied"
                     and "Unblock" in browser.text("#command-state"), "the unblock applied")
    assert not rig.fleet.meter("w01").relay_closed

    # a meter that is off: a command to it stays queued, and the page says so, until it is back
    w04 = rig.fleet.meter("w04")
    w04.power_off()
    browser.open(rig.base + "/meters/w04")
    browser.wait_for_text("offline", css="#online")
    browser.find_element(By.ID, "block").click()
    browser.wait_for(lambda d: attr(browser, "#command-state", "data-status") == "queued", "the block queued")
    assert "waiting for the meter to be online" in browser.text("#command-state")

    if alerts_served(rig):
        # offline longer than offline_alert_s (1 s here): an alert, on the meter's page and in the list
        browser.wait_for_text("offline since", css="#alarms", timeout=15)
        browser.screenshot("meter-queued")
        browser.find_element(By.LINK_TEXT, "Alerts").click()
        row = 'tr[data-alert]:has(a[href$="/meters/w04"])'
        browser.wait_for_text("offline", css=row)
        browser.screenshot("alerts")
        browser.find_element(By.CSS_SELECTOR, row + " button[data-ack]").click()
        browser.wait_for(lambda d: not js(browser, "return !!document.querySelector(arguments[0])", row),
                         "the acknowledged alert leaving the open list")
        Select(browser.find_element(By.ID, "alert-state")).select_by_value("all")
        assert "by olga" in browser.wait_for_text("by olga", css=row)
        alert = rig.gateway.get("/alerts?kind=offline&meter=w04")["items"][0]
        assert alert["acked_by"] == "olga" and alert["acked_ms"]
        browser.back()
    else:  # a gateway without the alerts: no link to them, and their page says so
        browser.screenshot("meter-queued")
        assert "Alerts" not in browser.text("nav")
        browser.open(rig.base + "/alerts")
        browser.wait_for_text("not available", css="#alerts-unavailable")
        browser.screenshot("alerts")
        browser.back()

    # back on: the queued block is sent and applied; the page follows it from the ledger
    browser.wait_for(lambda d: d.current_url.endswith("/meters/w04"), "the meter page again")
    w04.power_on()
    # (read in one script: the table is redrawn as events arrive)
    newest = "const r = document.querySelector('#commands tbody tr'); return r ? r.textContent : ''"
    browser.wait_for(lambda d: "closed" in js(browser, newest) and "applied" in js(browser, newest),
                     "the block applied after the meter came back", timeout=15)
    assert w04.relay_closed

    browser.find_element(By.LINK_TEXT, "Policy").click()
    browser.wait_for_text("Only an admin can change the policy", css="#policy-role")
    assert browser.find_element(By.ID, "mean_factor").get_attribute("disabled") is not None
    browser.screenshot("policy-operator")
    browser.assert_no_console_errors()


def test_admin_edits_the_policy_and_sees_errors_next_to_the_field(rig, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    login(browser, rig.base, "ada", "/policy")
    browser.wait_for_text("Saving replaces", css="#policy-role")
    factor = browser.find_element(By.ID, "mean_factor")
    browser.wait_for(lambda d: factor.get_attribute("value") == "1.0" or factor.get_attribute("value") == "1",
                     "the settings loaded")
    factor.clear()
    factor.send_keys("lots")
    cap = browser.find_element(By.ID, "cap_m3")
    cap.clear()
    cap.send_keys("-3")
    browser.find_element(By.ID, "policy-save").click()
    err = browser.wait_for_text("must be a number", css='.field[data-field="mean_factor"] .field-error')
    assert "above 0" in err
    assert "cubic metres" in browser.text('.field[data-field="cap_m3"] .field-error')
    assert browser.find_element(By.ID, "policy-error").is_displayed() is False
    browser.screenshot("policy-errors")

    Select(browser.find_element(By.ID, "mode")).select_by_value("dry_run")
    factor.clear()
    factor.send_keys("1.5")
    cap.clear()
    browser.find_element(By.ID, "caps_m3").send_keys("w02 = 0.001")
    browser.find_element(By.ID, "policy-save").click()
    browser.wait_for_text("Saved.", css="#policy-saved")
    settings = rig.gateway.get("/policy")["settings"]
    assert (settings["mode"], settings["mean_factor"], settings["cap_m3"], settings["caps_m3"]) == \
        ("dry_run", 1.5, None, {"w02": 0.001})
    # the dry run lists w02 over its own cap
    browser.wait_for(lambda d: "w02" in browser.text("#evaluation"), "the dry-run list", timeout=15)
    browser.screenshot("policy")
    browser.assert_no_console_errors(ignore=(r"/api/v1/policy - Failed to load resource: .* 400",))


def test_consumer_sees_only_their_meters_and_bill_and_is_refused_another(rig, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    login(browser, rig.base, "carla")
    assert browser.current_url == rig.base + "/portal"
    nav = browser.text("nav")
    assert "Dashboard" not in nav and "Alerts" not in nav and "My water" in nav
    select = Select(browser.find_element(By.ID, "meter-select"))
    assert [o.get_attribute("value") for o in select.options] == CONSUMER_METERS
    browser.wait_for_text("EUR", css="#bill-total")
    bill = rig.gateway.get("/meters/w05/bill")
    assert browser.text("#bill-total") == f"{bill['total']} EUR"
    assert "minimum charge" in browser.text("#bill tbody")
    browser.wait_for(lambda d: int(attr(browser, "#chart-hour svg", "data-count") or 0) in (23, 24, 25), "hours")
    assert int(attr(browser, "#chart-month svg", "data-count")) == 12
    browser.wait_for(lambda d: float(attr(browser, "#chart-hour svg", "data-last") or 0) >= 0
                     and browser.text("#sum-today") != "–", "today's total")
    browser.screenshot("portal")

    # a leak reported by their other meter: a warning there
    publish_health(rig, "w06", ["leak"])
    rig.gateway.wait_for(lambda: "leak" in (rig.gateway.get("/meters/w06")["health"] or {}).get("alarms", ()),
                         "w06's health report listing the leak")
    select.select_by_value("w06")
    browser.wait_for_text("w06", css="#portal-meter")
    browser.wait_for(lambda d: "meter=w06" in d.current_url, "the meter in the URL")
    assert "Possible leak" in browser.wait_for_text("Possible leak", css="#warnings")
    browser.screenshot("portal-leak")

    # nothing of the operator's: the dashboard sends a consumer to the portal
    browser.open(rig.base + "/")
    browser.wait_for(lambda d: d.current_url.endswith("/portal"), "back to the portal")

    # another meter's page: refused, by the API (403) and on the page
    browser.open(rig.base + "/meters/w01")
    text = browser.wait_for_text("Refused", css="#meter-error")
    assert "not one of yours" in text
    assert browser.find_element(By.ID, "meter-panels").is_displayed() is False
    assert fetch_status(browser, "/meters/w01")[0] == 403
    assert fetch_status(browser, "/meters/w01/usage?by=day")[0] == 403
    assert fetch_status(browser, "/ranking")[0] == 403
    browser.screenshot("refused")

    # their own meter's live page works, without the valve buttons
    browser.open(rig.base + "/meters/w05")
    live = "live" if served(browser, "meter_live") else "polling"
    browser.wait_for(lambda d: attr(browser, "#live-source", "data-mode") == live, f"the meter's {live} updates")
    assert browser.find_element(By.ID, "valve-controls").is_displayed() is False
    browser.assert_no_console_errors(ignore=REFUSED + (r"/api/v1/ranking - Failed to load resource: .* 403",))


PAGES = [("dashboard", "/", "#ranking tbody tr"), ("meter", "/meters/w02", "#register-chart svg[data-count]"),
         ("alerts", "/alerts", "#alerts-source"), ("policy", "/policy", "#policy-source")]


def test_every_page_on_a_phone(rig, phone):
    login(phone, rig.base, "ada")
    for name, path, ready in PAGES:
        phone.open(rig.base + path)
        phone.wait_for(lambda d: js(phone, "return !!document.querySelector(arguments[0])", ready), f"{name} ready")
        phone.wait_for(lambda d: no_sideways_scroll(phone), f"{name} fitting the phone's width")
        assert phone.viewport() == (390, 844)
        phone.screenshot(name)
    phone.assert_no_console_errors()


def test_consumer_portal_on_a_phone(rig, phone):
    login(phone, rig.base, "carla")
    phone.wait_for_text("EUR", css="#bill-total")
    phone.wait_for(lambda d: no_sideways_scroll(phone), "the portal fitting the phone's width")
    phone.screenshot("portal")
    phone.assert_no_console_errors()


def test_pages_are_served_without_a_session_only_as_the_login_page(rig):
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    for path in ("/", "/meters/w01", "/alerts", "/policy", "/portal"):
        try:
            opener.open(rig.base + path)
            raise AssertionError(f"{path} answered without a session")
        except urllib.error.HTTPError as e:
            assert e.code == 302 and re.search(r"/login\?next=", e.headers["Location"]), path
    with urllib.request.urlopen(rig.base + "/login") as r:
        page = r.read().decode()
        csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert '<meta name="viewport"' in page
    # nothing from another site: every script, style and icon is served here
    assert not re.search(r'(src|href)="(https?:)?//', page)
    with urllib.request.urlopen(rig.base + "/favicon.ico") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("image/svg+xml")
    assert set(RATES) >= set(CONSUMER_METERS)
