"""The cloud link down: a fog (its own Mosquitto bridged to the cloud's, a gateway with
a region, emulated meters) and the cloud (`aquafog cloud` on its own Mosquitto). The
cloud broker goes away mid-stream, then the cloud process too; the fog keeps ingesting.
When both are back, the fog holds every litre and the cloud's view of the region (the
partial sums the fog sent: sum_ml and meter count of today and this month) equals the
fog's own sums."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request

import pytest

from aquafog.bridge import BridgeConfig
from aquafog.broker import LocalBroker
from aquafog.cloud.local import LocalCloud
from aquafog.periods import Calendar

from emulator import Fleet, meter_ids
from integration.gatewayproc import GatewayProcess

from .ledger import tally

pytestmark = pytest.mark.integration

MIN = 60  # simulated seconds
REGION = "north"
START_S = 60.0  # a process's start-up on a busy CI machine


class CityRig:
    def __init__(self, root):
        self.gw: GatewayProcess | None = None
        self.fleet: Fleet | None = None
        self.cloud_broker = LocalBroker(root / "cloud-broker")
        self.fog_broker = LocalBroker(root / "fog-broker", bridge=BridgeConfig(
            REGION, "127.0.0.1", self.cloud_broker.port, restart_timeout=1))
        self.cloud = LocalCloud(root / "cloud", self.cloud_broker.port)
        try:
            self.cloud_broker.start()
            self.fog_broker.start()
            self.cloud.start(timeout=START_S)
            self.cloud_token = self.cloud.token()
        except BaseException:
            self.close()
            raise

    def cloud_mean(self, period: str) -> dict | None:
        """The cloud's /city/mean, or None while it is down."""
        req = urllib.request.Request(f"{self.cloud.url}/city/mean?period={period}",
                                     headers={"Authorization": f"Bearer {self.cloud_token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def cloud_region(self, period: str) -> tuple[int, int] | None:
        """(meters, sum_ml) the cloud holds for this fog's region."""
        body = self.cloud_mean(period)
        part = next((p for p in (body or {}).get("regions", ()) if p["region"] == REGION), None)
        return (part["meters"], part["sum_ml"]) if part else None

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        for p in (self.gw, self.cloud, self.fog_broker, self.cloud_broker):
            if p is not None:
                p.stop()


@pytest.fixture
def city(tmp_path):
    rig = CityRig(tmp_path)
    yield rig
    rig.close()


def fog_sums(db_path, now: float) -> dict[str, tuple[int, int]]:
    """(meters, sum_ml) of today and this month in the fog's own store (UTC, its timezone)."""
    day, month = Calendar("UTC").keys(int(now))
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        n = con.execute("SELECT COUNT(*) FROM meters").fetchone()[0]
        d = con.execute("SELECT COALESCE(SUM(ml), 0) FROM consumption_daily WHERE day = ?", (day,)).fetchone()[0]
        m = con.execute("SELECT COALESCE(SUM(ml), 0) FROM consumption_monthly WHERE month = ?",
                        (month,)).fetchone()[0]
        return {"today": (n, d), "month": (n, m)}
    finally:
        con.close()


def wait_for(pred, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return v


def test_cloud_link_down_loses_nothing_and_the_cloud_catches_up(city, tmp_path, fault_table):
    ids = meter_ids(6, "cl")
    city.gw = gw = GatewayProcess(tmp_path / "gw", city.fog_broker.port, ids, region=REGION,
                                  summary_interval_ms=200).start(timeout=START_S)
    # 45 simulated minutes ending about now: the readings fall in today (and the cloud's "today")
    fleet = city.fleet = Fleet(city.fog_broker.host, city.fog_broker.port, ids, seed=61, speed=300.0,
                               start_epoch=time.time() - 45 * MIN, fs_root=tmp_path / "flash")
    t0 = fleet.clock.start_epoch
    fleet.start()
    fleet.wait_until(t0 + 10 * MIN, timeout=30)
    wait_for(lambda: (r := city.cloud_region("month")) and r[1] > 0, "the fog's partials at the cloud", 20)

    # the cloud broker goes away: the bridge is down, the fog goes on
    city.cloud_broker.stop()
    t_down = fleet.clock.now()
    before = city.cloud_region("month")
    stored_at_down = fog_sums(gw.db_path, time.time())["month"][1]
    fleet.wait_until(t_down + 15 * MIN, timeout=30)
    gw.wait_for(lambda: fog_sums(gw.db_path, time.time())["month"][1] > stored_at_down,
                "the fog storing consumption with the cloud away", timeout=20)
    assert city.cloud_region("month") == before  # the cloud cannot know yet
    assert all(gw.get(f"/meters/{m}")["online"] for m in ids)  # the meters never noticed
    # then the cloud process goes too (SIGTERM), and the fog still goes on
    city.cloud.stop()
    fleet.wait_until(t_down + 25 * MIN, timeout=30)

    # both back: the bridge reconnects and delivers; the cloud starts from its store
    city.cloud_broker.start()
    city.cloud.start(timeout=START_S)
    fleet.wait_until(t0 + 40 * MIN, timeout=30)
    fleet.quiesce(timeout=30, freeze=True)
    t = fault_table(tally("cloud link down (broker 25 min, cloud 15 min)", fleet, gw.db_path))
    assert fleet.errors == []
    assert t.ok and not t.notes, t

    # the cloud's view of the region converges to the fog's own sums, and stays there
    now = time.time()
    fog = fog_sums(gw.db_path, now)
    for period in ("today", "month"):
        wait_for(lambda p=period: city.cloud_region(p) == fog[p], f"the cloud's {period} to equal the fog's", 30)
    assert fog["month"][0] == len(ids) and fog["month"][1] > before[1]
    # and the fog hears the city's new mean from the cloud (its region is the whole city here)
    gw.wait_for(lambda: gw.request("GET", "/city/mean?period=month")[1].get("sum_ml") == fog["month"][1],
                "the city mean back at the fog", timeout=30)
    cal = Calendar("UTC")
    if cal.keys(int(t0)) == cal.keys(int(now)):  # the whole run in one day: the cloud's figure is every litre
        assert fog["today"][1] == fog["month"][1] == t.persisted_ml
    t.notes.append(f"cloud's month figure for {REGION}: {fog['month'][1] / 1000:.3f} L over {fog['month'][0]} meters "
                   f"= the fog's (it held {before[1] / 1000:.3f} L when the link went down)")
