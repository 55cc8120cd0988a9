"""City scale with real parts: 3 fogs (each its own Mosquitto, bridged to the cloud
broker, and a gateway process) and the cloud service on its own Mosquitto. The city
answers are checked against the brute-force truth over every meter.

The cloud runs in this process (threads); every test runs once on SQLite and once on a
throw-away PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import json
import random
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aquafog.bridge import BridgeConfig
from aquafog.broker import LocalBroker, free_port
from aquafog.cloud.service import Cloud
from aquafog.config import CloudConfig

from pg import pg_url, postgres_server  # noqa: F401  (fixtures)

from .gatewayproc import GatewayProcess
from authz import cloud_token

from .httpjson import TOKENS, authorize, forget, get, post, put, wait_for
from .sse import SSE

pytestmark = pytest.mark.integration

K = 100                      # each fog's top-K (summary_top_k)
REGIONS = ("north", "south", "east")
ACTIVE, SILENT = 150, 5      # meters per fog with readings today, and registered ones without


def reading(seq: int, ml: int, ts: int) -> bytes:
    return json.dumps({"v": 1, "boot": "c1c1c1c1", "seq": seq, "ts": ts, "pulses": ml * 45 // 100,
                       "litres": float(f"{ml / 1000:.3f}"), "flow": 0.0, "valve": "open"}).encode()


class Fog:
    def __init__(self, region: str, root, cloud_port: int):
        self.region = region
        self.meters = [f"{region[0]}{i:04d}" for i in range(ACTIVE + SILENT)]
        self.broker = LocalBroker(root / "broker", bridge=BridgeConfig(region, "127.0.0.1", cloud_port,
                                                                       restart_timeout=1)).start()
        self.gateway = GatewayProcess(root / "gw", self.broker.port, self.meters, region=region,
                                      summary_top_k=K, summary_interval_ms=200, policy_interval_ms=200).start()
        self.usage: dict[str, int] = {}  # ml used today per meter: the truth
        self.seq: dict[str, int] = {}

    def use(self, rng: random.Random, meters: list[str], amount: int | None = None) -> None:
        """Each meter reports its register: baseline first, then growing by a random amount
        (or by `amount` ml)."""
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"load-{self.region}")
        c.connect("127.0.0.1", self.broker.port)
        c.loop_start()
        now = int(time.time())
        try:
            for m in meters:
                seq = self.seq.get(m, -1) + 1
                if seq:
                    more = amount if amount is not None else rng.choice([0, 1000, 1000, 2500, rng.randrange(1, 90000)])
                    self.usage[m] = self.usage.get(m, 0) + more
                self.seq[m] = seq
                c.publish(f"aquafog/{m}/tele/reading", reading(seq, self.usage.get(m, 0), now), qos=1
                          ).wait_for_publish(10)
        finally:
            c.disconnect()
            c.loop_stop()

    def stored(self) -> bool:
        return all(self.gateway.get(f"/meters/{m}")["register"]["seq"] == s for m, s in self.seq.items())

    def stop(self) -> None:
        self.gateway.stop()
        self.broker.stop()




@pytest.fixture(params=["sqlite", "postgresql"])
def city(request, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'cloud.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    cloud_broker = LocalBroker(tmp_path / "cloud-broker").start()
    fogs, cloud = [], None
    try:
        for r in REGIONS:
            fogs.append(Fog(r, tmp_path / r, cloud_broker.port))
        # the cloud reads meter detail at each fog with an operator token of that fog
        tokens = {f.region: f.gateway.token("cloud", role="operator") for f in fogs}
        cfg = CloudConfig(db_url=db_url, mqtt_port=cloud_broker.port, http_port=free_port(), fog_tokens=tokens)
        cloud = Cloud(cfg)
        authorize(f"http://127.0.0.1:{cloud.http_port}/", cloud_token(cloud.engine))
        cloud.start()
        yield cloud_broker, cloud, fogs
    finally:
        for f in fogs:
            f.stop()
        if cloud is not None:
            forget(f"http://127.0.0.1:{cloud.http_port}/")
            cloud.stop()
        cloud_broker.stop()


def truth_ranking(fogs):
    return sorted(((m, ml) for f in fogs for m, ml in f.usage.items()), key=lambda kv: (-kv[1], kv[0]))


def city_matches(api: str, fogs) -> bool:
    status, body = get(f"{api}/city/ranking?n={K}&period=today")
    want = truth_ranking(fogs)[:K]
    return status == 200 and [(i["meter"], round(i["litres"] * 1000)) for i in body["items"]] == want


def test_city_ranking_and_mean_equal_the_truth_and_survive_a_cloud_broker_outage(city):
    cloud_broker, cloud, fogs = city
    api = f"http://127.0.0.1:{cloud.http_port}/api/v1"
    rng = random.Random(7)
    for f in fogs:
        active = f.meters[:ACTIVE]
        f.use(rng, active)  # baselines
        f.use(rng, active)  # consumption
    for f in fogs:
        f.gateway.wait_for(f.stored, "every reading stored at " + f.region)
    wait_for(lambda: city_matches(api, fogs), "the city ranking to equal the truth")

    truth = truth_ranking(fogs)
    owner = {m: f.region for f in fogs for m in f.meters}
    for period in ("today", "month"):
        for n in (1, 10, K):
            status, body = get(f"{api}/city/ranking?n={n}&period={period}")
            assert status == 200 and body["exact_up_to"] == K and sorted(body["regions"]) == sorted(REGIONS)
            assert [(i["meter"], round(i["litres"] * 1000)) for i in body["items"]] == truth[:n], (period, n)
            assert all(i["region"] == owner[i["meter"]] for i in body["items"])
        status, body = get(f"{api}/city/mean?period={period}")
        assert status == 200
        assert body["meters"] == len(REGIONS) * (ACTIVE + SILENT)  # silent meters count, at 0 L
        assert body["sum_ml"] == sum(ml for _, ml in truth)
        by_region = {r["region"]: r for r in body["regions"]}
        for f in fogs:
            assert by_region[f.region]["sum_ml"] == sum(f.usage.values())
            assert by_region[f.region]["meters"] == len(f.meters)
    # every fog hears the city mean from the cloud
    for f in fogs:
        body = f.gateway.wait_for(
            lambda f=f: (m := f.gateway.request("GET", "/city/mean")[1]).get("sum_ml") == sum(ml for _, ml in truth)
            and m, f"the city mean at {f.region}")
        assert body["meters"] == len(REGIONS) * (ACTIVE + SILENT) and sorted(body["regions"]) == sorted(REGIONS)
    status, body = get(f"{api}/city/ranking?n={K + 1}")
    assert status == 400 and body["error"]["field"] == "n" and "exact" in body["error"]["message"]

    # the cloud broker goes away: the fogs keep ingesting; when it is back the city converges
    cloud_broker.stop()
    for f in fogs:
        f.use(rng, f.meters[:ACTIVE:3])
    for f in fogs:
        f.gateway.wait_for(f.stored, "readings stored at " + f.region + " while the cloud is away")
    assert not city_matches(api, fogs)  # the cloud cannot know yet
    cloud_broker.start()
    wait_for(lambda: city_matches(api, fogs), "the city ranking to converge after the outage", timeout=30)
    status, body = get(f"{api}/city/mean")
    assert body["sum_ml"] == sum(ml for _, ml in truth_ranking(fogs))
    for f in fogs:  # and the fogs hear the new mean
        f.gateway.wait_for(lambda f=f: f.gateway.request("GET", "/city/mean")[1].get("sum_ml") == body["sum_ml"],
                           f"the new city mean at {f.region}")
    assert cloud.rejected == {} and cloud.accepted > 0



def test_a_block_at_the_cloud_reaches_the_meter_in_its_fog_and_is_confirmed_applied(city, tmp_path):
    from emulator import Fleet

    _, cloud, fogs = city
    api = f"http://127.0.0.1:{cloud.http_port}/api/v1"
    south = next(f for f in fogs if f.region == "south")
    ids = ["semu01", "semu02"]
    south.gateway.register(ids)
    fleet = Fleet("127.0.0.1", south.broker.port, ids, seed=5, speed=1.0, start_epoch=time.time() - 5,
                  fs_root=tmp_path / "flash")
    fleet.start()
    try:
        for m in ids:
            south.gateway.wait_for(lambda m=m: south.gateway.get(f"/meters/{m}")["online"], f"{m} online")
        # the directory: every fog's meters, the new ones included
        wait_for(lambda: get(f"{api}/meters/semu01")[0] == 200, "semu01 in the cloud's directory")
        # meter detail at the cloud is the owning fog's own answer
        status, body = get(f"{api}/meters/semu01")
        assert status == 200 and (body["region"], body["served_by"]) == ("south", south.gateway.url[:-len("/api/v1")])
        assert body["meter"] == south.gateway.get("/meters/semu01")["meter"] == "semu01" and body["online"]
        assert get(f"{api}/meters/n0003")[1]["region"] == "north"
        status, body = get(f"{api}/meters/semu01/commands?limit=1")
        assert status == 200 and body.pop("region") == "south" and body.pop("served_by")
        assert body == south.gateway.get("/meters/semu01/commands?limit=1")
        status, body = get(f"{api}/meters/semu01/readings?limit=0")  # the fog's own refusal, passed on
        assert status == 400 and body["error"]["field"] == "limit"
        status, body = get(f"{api}/meters/semu01/usage?by=month")
        assert status == 200 and body.pop("region") == "south" and body.pop("served_by")
        assert body == south.gateway.get("/meters/semu01/usage?by=month")
        status, body = get(f"{api}/meters/semu01/bill")  # the fog has no tariff file: its 404, passed on
        assert status == 404 and "tariff_file" in body["error"]["message"]
        fogs_list = {f["region"]: f for f in get(f"{api}/fogs")[1]["items"]}
        assert fogs_list["south"]["meters"] == ACTIVE + SILENT + 2 and fogs_list["south"]["status"] == "ok"

        # the meter's live events, relayed by the cloud from the south fog's stream
        live = SSE(f"{api}/meters/semu01/live", headers={"Authorization": f"Bearer {TOKENS[api[:api.index('/api')] + '/']}"})
        assert live.status == 200 and live.headers["Content-Type"].startswith("text/event-stream")
        status, body = post(f"{api}/meters/semu01/valve", {"state": "closed", "command_id": "city-block-1",
                                                            "reason": "above the city mean"})
        assert status == 202 and body["command"]["region"] == "south" and body["command"]["status"] == "routed"
        final = wait_for(lambda: (c := get(f"{api}/commands/city-block-1")[1]["command"])["status"] == "applied"
                         and c, "the meter to confirm the block")
        assert final["error"] is None
        ev = live.wait(lambda e: e["event"] == "command" and e["data"]["id"] == "city-block-1"
                       and e["data"]["status"] == "applied", "the applied block on the cloud's live relay")
        assert ev["id"] and ev["data"]["meter"] == "semu01"
        live.close()
        meter = fleet.meter("semu01")
        assert meter.relay_closed and meter.valve == "closed"
        assert not fleet.meter("semu02").relay_closed
        # the fog's own ledger has it, from the cloud, applied
        fog_cmd = south.gateway.get("/commands/city-block-1")["command"]
        assert (fog_cmd["origin"], fog_cmd["status"], fog_cmd["meter"]) == ("cloud", "applied", "semu01")

        # the same command again is the same command; another state under its id is a conflict
        assert post(f"{api}/meters/semu01/valve", {"state": "closed", "command_id": "city-block-1"})[0] == 200
        status, body = post(f"{api}/meters/semu01/valve", {"state": "open", "command_id": "city-block-1"})
        assert status == 409 and body["error"]["field"] == "command_id"
        # an unknown meter, a bad state
        status, body = post(f"{api}/meters/zz9999/valve", {"state": "closed"})
        assert status == 404 and "directory" in body["error"]["message"]
        status, body = post(f"{api}/meters/semu01/valve", {"state": "ajar"})
        assert status == 400 and body["error"]["field"] == "state"
        assert get(f"{api}/commands/nope")[0] == 404

        # the owning fog down: meter detail says which fog did not answer
        north = next(f for f in fogs if f.region == "north")
        north.gateway.stop()
        status, body = get(f"{api}/meters/n0003")
        assert status == 502 and "fog 'north'" in body["error"]["message"]
        status, body = get(f"{api}/meters/n0003/live")
        assert status == 502 and "fog 'north'" in body["error"]["message"]
        assert get(f"{api}/meters/zz9999")[0] == 404
    finally:
        fleet.stop()


def over_mean(fogs) -> set[str]:
    """Ground truth: the meters whose consumption exceeds the exact city mean (k = 1)."""
    n = sum(len(f.meters) for f in fogs)
    total = sum(ml for f in fogs for ml in f.usage.values())
    return {m for f in fogs for m, ml in f.usage.items() if ml * n > total}


def evaluation(f, after_ms: int, sum_ml: int):
    """The fog's first policy evaluation after `after_ms` that used the city mean of `sum_ml`."""
    body = f.gateway.get("/policy?limit=10000")
    ev = body["evaluation"]
    if ev is None or ev["evaluated_ms"] <= after_ms or (ev["mean"] or {}).get("sum_ml") != sum_ml:
        return None
    return ev


def test_mean_and_cap_policies_block_exactly_the_meters_over_them_and_dry_run_blocks_nobody(city):
    cloud_broker, cloud, fogs = city
    api = f"http://127.0.0.1:{cloud.http_port}/api/v1"
    rng = random.Random(11)
    for f in fogs:
        f.use(rng, f.meters[:ACTIVE])
        f.use(rng, f.meters[:ACTIVE])
    total = sum(ml for f in fogs for ml in f.usage.values())
    for f in fogs:
        f.gateway.wait_for(f.stored, "every reading stored at " + f.region)
        f.gateway.wait_for(lambda f=f: f.gateway.request("GET", "/city/mean")[1].get("sum_ml") == total,
                           f"the exact city mean at {f.region}", timeout=20)
    truth = over_mean(fogs)
    assert 0 < len(truth) < sum(len(f.usage) for f in fogs)

    # dry run of the mean rule everywhere, set once at the cloud: the exact list, nobody blocked
    t0 = int(time.time() * 1000)
    status, body = put(f"{api}/policy", {"mode": "dry_run", "period": "day"})
    assert status == 200 and body["sent"] and body["settings"]["mode"] == "dry_run"
    assert put(f"{api}/policy", {"mode": "dry_run", "mean_factor": 0})[1]["error"]["field"] == "mean_factor"
    for f in fogs:
        ev = f.gateway.wait_for(lambda f=f: evaluation(f, t0, total), f"a dry run at {f.region}")
        assert ev["mean"]["meters"] == len(REGIONS) * (ACTIVE + SILENT) and ev["mean"]["source"] == "city"
        assert {m["meter"] for m in ev["meters"]} == truth & set(f.meters)
        assert {m["action"] for m in ev["meters"]} <= {"would_block"}
        assert f.gateway.get("/policy/blocks")["items"] == []
        assert not any(f.gateway.get(f"/meters/{m}/commands")["items"] for m in f.meters[:ACTIVE])
        assert f.gateway.get("/policy")["source"] == "city"
    # the cloud sees each fog's policy in its info
    wait_for(lambda: [x["policy"] and (x["policy"]["mode"], x["policy"]["source"]) for x in get(f"{api}/policy")[1]["fogs"]]
             == [("dry_run", "city")] * 3, "every fog's policy at the cloud")

    # enforce: the mean rule at north and south; caps, an own cap and an exemption at east
    north, south, east = fogs
    t1 = int(time.time() * 1000)
    for f in (north, south):  # a fog's own change, newer than the city's, wins at that fog
        assert f.gateway.request("PUT", "/policy", {"mode": "enforce", "period": "day"})[1]["source"] == "api"
    ranked = sorted(east.usage.items(), key=lambda kv: -kv[1])
    hospital, farm = ranked[0][0], ranked[1][0]
    small = next(m for m, ml in ranked if 1000 < ml <= 50_000)
    cap = {"mode": "enforce", "period": "month", "mean_rule": False, "cap_m3": 0.05,
           "caps_m3": {farm: 100.0, small: 0.0005}, "exempt": [hospital]}
    assert east.gateway.request("PUT", "/policy", cap)[0] == 200
    want_cap = {m for m, ml in east.usage.items() if ml > {farm: 10**8, small: 500}.get(m, 50_000)} - {hospital}
    assert small in want_cap and farm not in want_cap and len(want_cap) > 2

    mean_ml = total // (len(REGIONS) * (ACTIVE + SILENT))
    for f in (north, south):
        f.gateway.wait_for(lambda f=f: evaluation(f, t1, total), f"the mean policy enforced at {f.region}")
        blocks = {b["meter"]: b for b in f.gateway.get("/policy/blocks?active=true&limit=1000")["items"]}
        assert set(blocks) == truth & set(f.meters)
        for m, b in blocks.items():
            assert (b["rule"], b["ml"], b["threshold_ml"]) == ("mean", f.usage[m], mean_ml)
            assert b["mean"] == {"source": "city", "sum_ml": total, "meters": len(REGIONS) * (ACTIVE + SILENT),
                                 "factor": 1.0}
            cmd = f.gateway.get(f"/commands/{b['command_id']}")["command"]
            assert (cmd["origin"], cmd["state"], cmd["meter"]) == ("policy", "closed", m)
            assert cmd["reason"].startswith("policy mean: used")
    east.gateway.wait_for(lambda: evaluation(east, t1, total), "the cap policy enforced at east")
    blocks = {b["meter"]: b for b in east.gateway.get("/policy/blocks?active=true&limit=1000")["items"]}
    assert set(blocks) == want_cap
    assert blocks[small]["threshold_ml"] == 500 and blocks[small]["rule"] == "cap"
    ev = east.gateway.get("/policy?limit=1000")["evaluation"]
    assert next(m for m in ev["meters"] if m["meter"] == hospital)["action"] == "exempt"

    # an operator re-opens one blocked meter through the cloud: the block ends for the period
    victim = sorted(truth & set(north.meters))[0]
    status, body = post(f"{api}/meters/{victim}/valve", {"state": "open", "reason": "operator override"})
    assert status == 202
    b = north.gateway.wait_for(
        lambda: (x := north.gateway.get(f"/policy/blocks?meter={victim}")["items"][0])["released_by"] and x,
        "the block to be released by the operator")
    assert (b["released_by"], b["release_command_id"]) == ("operator", body["command"]["id"])
    t2 = int(time.time() * 1000)
    north.gateway.wait_for(lambda: evaluation(north, t2, total), "another round at north")
    assert north.gateway.get(f"/meters/{victim}")["valve"]["desired"] == "open"

    # the cloud away: south keeps enforcing the last known mean on new consumption
    cloud_broker.stop()
    light = next(m for m in south.meters[:ACTIVE] if south.usage[m] <= mean_ml and m not in truth)
    south.use(rng, [light], amount=mean_ml + 1 - south.usage[light])
    south.gateway.wait_for(south.stored, "the new reading stored at south")
    b = south.gateway.wait_for(lambda: (x := south.gateway.get(f"/policy/blocks?meter={light}")["items"]) and x[0],
                               "a block on the last known mean while the cloud is away")
    assert (b["ml"], b["threshold_ml"], b["mean"]["sum_ml"]) == (mean_ml + 1, mean_ml, total)
