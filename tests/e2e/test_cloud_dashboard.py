"""The same web UI served by the cloud for the whole city: a real Mosquitto and a real
`aquafog cloud` process, fed the fogs' partials as their bridges deliver them; an operator
sees the city's top N with each meter's region, and it follows a new partial."""

from __future__ import annotations

import time

import pytest

from aquafog.bridge import cloud_summary_topic
from aquafog.broker import LocalBroker
from aquafog.cloud.local import LocalCloud
from aquafog.federation import Partial, encode_partial, period_key
from aquafog.periods import Calendar, day_key

from .rig import PASSWORD, attr, js, login, no_sideways_scroll

TODAY = period_key("day", day_key(Calendar("UTC").today(time.time())))


@pytest.fixture
def city(tmp_path):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    broker = LocalBroker(tmp_path / "broker").start()
    cloud = LocalCloud(tmp_path / "cloud", broker.port)
    cloud.add_user("olga", "operator", PASSWORD)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fog-bridges-stand-in")
    try:
        cloud.start()
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()

        def send(region: str, seq: int, top: list[tuple[str, int]]) -> None:
            p = Partial(region, "day", TODAY, seq, int(time.time() * 1000), 100, sum(ml for _, ml in top), 50,
                        tuple(top))
            pub.publish(cloud_summary_topic(region, "day", TODAY), encode_partial(p), qos=1).wait_for_publish(10)

        cloud.send = send
        yield cloud
    finally:
        pub.disconnect()
        pub.loop_stop()
        cloud.stop()
        broker.stop()


def test_the_cloud_serves_the_dashboard_with_the_city_ranking(city, browser, phone):
    from selenium.webdriver.common.by import By

    city.send("north", 1, [("n001", 9000), ("n002", 4000)])
    city.send("south", 1, [("s001", 7000), ("s002", 1000)])
    base = f"http://127.0.0.1:{city.http_port}"
    login(browser, base, "olga")
    browser.wait_for_text("Top consumers in the city", css="h1")
    assert "city ranking" in browser.text("#ranking-source")

    def shown():
        return js(browser, "return [...document.querySelectorAll('#ranking tbody tr')]"
                           ".map(r => [...r.cells].slice(1, 4).map(c => c.textContent))")
    browser.wait_for(lambda d: len(shown()) == 4, "the city's top 4")
    assert shown() == [["n001", "north", "9 L"], ["s001", "south", "7 L"], ["n002", "north", "4 L"],
                       ["s002", "south", "1 L"]]
    browser.screenshot("cloud-dashboard")

    city.send("south", 2, [("s002", 12000), ("s001", 7000)])  # the polled table follows
    browser.wait_for(lambda d: shown()[:1] == [["s002", "south", "12 L"]], "s002 on top")
    assert js(browser, "return performance.getEntriesByType('navigation').length") == 1

    browser.find_element(By.LINK_TEXT, "Policy").click()
    browser.wait_for_text("Only an admin can change the policy", css="#policy-role")
    browser.wait_for_text("Fogs", css="#evaluation-title")
    browser.screenshot("cloud-policy")
    browser.assert_no_console_errors()

    login(phone, base, "olga")
    phone.wait_for(lambda d: attr(phone, "#ranking tbody tr", "data-meter") == "s002", "the ranking on the phone")
    assert no_sideways_scroll(phone)
    phone.screenshot("cloud-dashboard")
    phone.assert_no_console_errors()
