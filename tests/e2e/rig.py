"""A small city block for the dashboard tests: a real Mosquitto, a real gateway process with a
tariff file, users of every role, and emulated meters running the real firmware, each with a
steady leak of its own size (so water flows from the first second, and the ranking's order
is known), reporting every second.

Also the browser side: `login(browser, base, user)` through the login page, and small DOM
helpers that wait for what a person would see.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from aquafog.broker import LocalBroker

PASSWORD = "correct horse battery staple"  # at least 12 characters (accounts.py)
# meter -> leak in ml/s: w01 uses the most, w06 the least
RATES = {"w01": 60.0, "w02": 45.0, "w03": 30.0, "w04": 20.0, "w05": 12.0, "w06": 6.0}
CONSUMER_METERS = ["w05", "w06"]
USERS = {"olga": ("operator", ()), "ada": ("admin", ()), "carla": ("consumer", CONSUMER_METERS)}

TARIFF = """
utility = "aguas-do-teste"

[[tariff]]
utility = "aguas-do-teste"
effective = 2000-01-01
name = "test domestic"
currency = "EUR"
minimum_m3 = 10
minimum_charge = "9.50"
sewage_percent = "43"
blocks = [
  { from_m3 = 10, to_m3 = 20, price = "1.2750" },
  { from_m3 = 20, price = "2.1000" },
]
"""


class Rig:
    def __init__(self, root: Path):
        from emulator import Fleet, Profile
        from integration.gatewayproc import GatewayProcess

        self.root = root
        self.broker = LocalBroker(root / "broker").start()
        try:
            tariff = root / "tariff.toml"
            tariff.write_text(TARIFF)
            settings = {"tariff_file": str(tariff)}
            from aquafog.config import GatewayConfig
            if "offline_alert_s" in GatewayConfig.__dataclass_fields__:  # alerts (gateway/alerts.py)
                settings["offline_alert_s"] = 1
            self.gateway = GatewayProcess(root / "gateway", self.broker.port, list(RATES), **settings)
            for name, (role, meters) in USERS.items():
                self.gateway.add_user(name, role, PASSWORD, meters)
            self.gateway.start()
            self.fleet = Fleet(self.broker.host, self.broker.port, list(RATES), seed=7, speed=1.0,
                               start_epoch=time.time() - 2, report_interval_s=1, fs_root=root / "flash",
                               profiles={m: Profile(persons=0, leak_ml_per_s=r) for m, r in RATES.items()})
            self.fleet.start()
            for m in RATES:
                self.gateway.wait_for(lambda m=m: self.gateway.get(f"/meters/{m}")["online"], f"{m} online")
        except BaseException:
            self.stop()
            raise

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"

    def stop(self) -> None:
        for part in ("fleet", "gateway", "broker"):
            thing = getattr(self, part, None)
            if thing is not None:
                thing.stop()


def login(browser, base: str, username: str, path: str = "/"):
    """Open `path`, get sent to the login page, log in as `username`; returns the browser."""
    from selenium.webdriver.common.by import By

    browser.open(base + path)
    browser.wait_for(lambda d: "/login" in d.current_url, "the login page")
    browser.wait_for_text("Log in", css="h1")
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    browser.wait_for(lambda d: "/login" not in d.current_url, f"{username} logged in")
    return browser


def js(browser, script: str, *args):
    return browser.execute_script(script, *args)


def attr(browser, css: str, name: str):
    """An attribute of the first element at `css` (None if there is none yet)."""
    return js(browser, "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null",
              css, name)


def fetch_status(browser, path: str) -> tuple[int, dict]:
    """What the API answers this browser's session for `path` (GET, with its cookie)."""
    status, text = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text().then(t => done([r.status, t])));",
        "/api/v1" + path)
    return status, json.loads(text or "null")


def no_sideways_scroll(browser) -> bool:
    return js(browser, "return document.documentElement.scrollWidth <= window.innerWidth")


def alerts_served(rig: Rig) -> bool:
    """Whether this gateway serves the alerts (GET /api/v1/alerts)."""
    return rig.gateway.request("GET", "/alerts?limit=1")[0] == 200


def publish_health(rig: Rig, meter: str, alarms: list[str]) -> None:
    """A health report of `meter` listing `alarms`, as the firmware sends it (a real leak takes
    leak_hours of flow without a pause to show)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    boot = rig.fleet.meter(meter).boot
    body = {"v": 1, "boot": boot, "fw": "0.2.0", "uptime_s": 60, "reset": "power_on", "rssi": -60,
            "heap_free": 80000, "dropped": 0, "buffer": 0, "clock": "ntp", "alarms": alarms}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"e2e-health-{meter}")
    c.connect(rig.broker.host, rig.broker.port)
    c.loop_start()
    try:
        c.publish(f"aquafog/{meter}/tele/health", json.dumps(body), qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()
