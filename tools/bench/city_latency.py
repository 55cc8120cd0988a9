"""city_latency: from a meter reading that changes the city top-10 to that change showing
in the cloud's GET /api/v1/city/ranking?n=10 (issue 4: p99 <= 2 s), with real parts only.

Set-up: a cloud Mosquitto and an `aquafog cloud` process (SQLite); `fogs` fogs, each its
own Mosquitto bridged to the cloud broker (aquafog.bridge) and an `aquafog gateway`
process with the default settings (summary_interval_ms, batch_max_delay_ms,
summary_top_k) unless told otherwise; every fog's store bulk-loaded with `meters`
registered meters that have two readings today (run.populate, the ranking bench's loader).

One sample: a fresh meter (never in the top-10) of the next fog gets a reading (QoS 1 on
aquafog/<meter>/tele/reading, the meters' protocol) whose consumption today puts it
between the city's current 10th and 1st place plus up to 20 L. Then GET the fog's own
/api/v1/ranking?n=10 every `poll_ms` until the meter is there with the new figure
(the reference: ingest + commit + local API at the fog), then the cloud's city ranking
until it is there too (the figure). Both are measured from the publish. Between samples
a random pause of up to one summary interval, so readings arrive at a random phase of the
fogs' summary ticks (back to back, every sample would land just after a tick: the worst case).

A second reference: the bare MQTT path a partial takes, fog broker -> bridge -> cloud
broker -> a subscriber (an empty, non-retained message, which the cloud ignores).

Also measured: the cost of one summary tick at a fog (aquafog.gateway.cloudlink.CloudLink.tick
on the fog's store: partials of today and this month, the directory check), which is what
a shorter summary_interval_ms costs the fog.
"""

from __future__ import annotations

import http.client
import json
import queue
import random
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from aquafog.bridge import BridgeConfig, fog_summary_topic
from aquafog.broker import LocalBroker
from aquafog.cloud.local import LocalCloud
from aquafog.config import GatewayConfig
from aquafog.gateway.local import LocalGateway
from figures import log, pct, stats

GOAL_MS = 2000.0





def _get(conn: http.client.HTTPConnection, path: str) -> dict:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path}: HTTP {resp.status} {body[:300]!r}")
    return json.loads(body)


def _ml(item: dict) -> int:
    return round(item["litres"] * 1000)


class Fog:
    """A fog: its own Mosquitto bridged to the cloud broker, a gateway process on a bulk-loaded store."""

    def __init__(self, i: int, root: Path, cloud_port: int, meters: int, populate, settings: dict):
        self.region = f"fog{i}"
        self.prefix = f"f{i}m"
        self.meters = meters
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "gateway.db"
        t0 = time.time()
        populate(self.db, meters, self.prefix)
        self.fill_s = time.time() - t0
        self.broker = LocalBroker(root / "broker", bridge=BridgeConfig(self.region, "127.0.0.1", cloud_port,
                                                                       restart_timeout=1)).start()
        self.gateway = LocalGateway(root / "gw", self.broker.port, db_path=str(self.db), region=self.region,
                                    mqtt_client_id=f"bench-{self.region}", log_level="WARNING", **settings)
        self.gateway.start(timeout=120)
        self.http = self.gateway.connection()
        self.pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-meters-{self.region}")
        self.pub.connect("127.0.0.1", self.broker.port)
        self.pub.loop_start()
        self._next = meters  # fresh meters are taken from the top of the id range down

    def fresh_meter(self) -> str:
        self._next -= 1
        return f"{self.prefix}{self._next:06d}"

    def stop(self) -> None:
        self.pub.disconnect()
        self.pub.loop_stop()
        self.gateway.stop()
        self.broker.stop()


def _reading(boot: str, seq: int, ts: int, pulses: int, ml: int) -> bytes:
    return ('{"v":1,"boot":"%s","seq":%d,"ts":%d,"pulses":%d,"litres":%d.%03d,"flow":2.500,"valve":"open"}'
            % (boot, seq, ts, pulses, ml // 1000, ml % 1000)).encode()


def _poll(conn: http.client.HTTPConnection, path: str, meter: str, ml: int, poll_s: float,
          timeout: float = 20.0) -> tuple[float, list]:
    """perf_counter() when the answer first shows `meter` at `ml`, and that answer's items."""
    deadline = time.perf_counter() + timeout
    while True:
        items = _get(conn, path)["items"]
        now = time.perf_counter()
        if any(it["meter"] == meter and _ml(it) == ml for it in items):
            return now, items
        if now > deadline:
            raise TimeoutError(f"{meter} at {ml} ml not in {path} after {timeout:.0f} s: {items[:3]}")
        time.sleep(poll_s)


def _bridge_probe(fogs: list[Fog], cloud_port: int, count: int) -> list[float]:
    """One-way latency fog broker -> bridge -> cloud broker -> subscriber, ms."""
    got: queue.Queue = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bridge-probe")
    sub.on_message = lambda *_: got.put(time.perf_counter())
    subscribed = queue.Queue()
    sub.on_subscribe = lambda *_: subscribed.put(True)
    sub.connect("127.0.0.1", cloud_port)
    sub.loop_start()
    out = []
    try:
        sub.subscribe("aquafog-city/fogs/+/summary/bench/#", qos=1)
        subscribed.get(timeout=10)
        topic = fog_summary_topic("bench", "probe")  # empty payload: the cloud ignores it
        for i in range(count):
            f = fogs[i % len(fogs)]
            t0 = time.perf_counter()
            f.pub.publish(topic, b"", qos=1)
            out.append((got.get(timeout=10) - t0) * 1000)
            time.sleep(0.005)
    finally:
        sub.disconnect()
        sub.loop_stop()
    return out


def tick_cost(fog: Fog, count: int = 30) -> dict:
    """ms per summary tick (CloudLink.tick, without the publish) and per summary.compute, on the fog's store."""
    from sqlalchemy import func, select

    from aquafog.gateway.cloudlink import CloudLink
    from aquafog.gateway.summary import compute
    from aquafog.store.engine import open_engine
    from aquafog.store.schema import meters

    engine = open_engine(fog.db, create=False)
    try:
        cfg = GatewayConfig(db_path=str(fog.db), region=fog.region, mqtt_port=fog.broker.port,
                            mqtt_client_id="bench-tick")
        link = CloudLink(cfg, engine, writer=None)  # never connected: tick() computes, publishes nothing
        with engine.connect() as conn:
            link._directory = tuple(conn.execute(select(func.count(), func.max(meters.c.pk))).one())
        ticks, computes = [], []
        for i in range(count):
            t0 = time.perf_counter()
            link.tick()
            ticks.append((time.perf_counter() - t0) * 1000)
            with engine.connect() as conn:
                t0 = time.perf_counter()
                compute(conn, cfg, link.calendar, time.time(), i)
                computes.append((time.perf_counter() - t0) * 1000)
        return {"tick_p50_ms": round(pct(ticks, 50), 1), "tick_max_ms": round(max(ticks), 1),
                "compute_p50_ms": round(pct(computes, 50), 1), "compute_max_ms": round(max(computes), 1),
                "top_k": cfg.summary_top_k}
    finally:
        engine.dispose()


def measure(workdir: Path, populate, fogs: int = 2, meters: int = 100_000, samples: int = 100,
            summary_interval_ms: int | None = None, poll_ms: float = 5.0, probes: int = 200) -> dict:
    t_start = time.time()
    settings = {} if summary_interval_ms is None else {"summary_interval_ms": summary_interval_ms}
    interval_ms = summary_interval_ms or GatewayConfig.summary_interval_ms
    poll_s = poll_ms / 1000
    rng = random.Random(4)
    broker = LocalBroker(workdir / "cloud-broker").start()
    cloud = None
    fog_list: list[Fog] = []
    try:
        cloud = LocalCloud(workdir / "cloud", broker.port, mqtt_client_id="bench-cloud", log_level="WARNING").start()
        log(f"city_latency: {fogs} fogs x {meters} meters (bulk load), summary_interval_ms {interval_ms} ...")
        for i in range(fogs):
            fog_list.append(Fog(i, workdir / f"fog{i}", broker.port, meters, populate, settings))
        setup_s = time.time() - t_start
        cconn = cloud.connection()
        deadline = time.monotonic() + 120
        while True:
            body = _get(cconn, "/api/v1/city/ranking?n=10")
            if len(body["regions"]) == fogs and len(body["items"]) == 10:
                items = body["items"]
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cloud did not hear from every fog: {body}")
            time.sleep(0.05)
        log(f"  set up in {setup_s:.1f} s (fill {', '.join(f'{f.fill_s:.1f}' for f in fog_list)} s); "
            f"the cloud has every fog's partials")

        bridge = _bridge_probe(fog_list, broker.port, probes)
        log(f"  bridge fog->cloud broker: p50 {pct(bridge, 50):.2f} ms  p99 {pct(bridge, 99):.2f} ms")

        city, local = [], []
        dropped = 0
        t_samples = time.time()
        while len(city) < samples:
            time.sleep(rng.uniform(0, interval_ms / 1000))  # a random phase against the summary ticks
            fog = fog_list[(len(city) + dropped) % fogs]
            meter = fog.fresh_meter()
            d = _get(fog.http, f"/api/v1/meters/{meter}")
            reg = d["register"]
            today = round(d["consumption"]["today_litres"] * 1000)
            tenth, first = _ml(items[9]), _ml(items[0])
            target = tenth + rng.randrange(1, first - tenth + 20_000)
            used = target - today  # > 0: a fresh meter is below the 10th
            day = time.gmtime().tm_yday
            t0 = time.perf_counter()
            fog.pub.publish(f"aquafog/{meter}/tele/reading",
                            _reading(reg["boot"], reg["seq"] + 1, int(time.time()), reg["pulses"] + used * 45 // 100,
                                     round(reg["litres"] * 1000) + used), qos=1)
            try:
                t_fog, _ = _poll(fog.http, "/api/v1/ranking?n=10", meter, target, poll_s)
                t_city, items = _poll(cconn, "/api/v1/city/ranking?n=10", meter, target, poll_s)
            except TimeoutError:
                if time.gmtime().tm_yday != day:  # the day turned: today's totals started afresh
                    dropped += 1
                    items = _get(cconn, "/api/v1/city/ranking?n=10")["items"]
                    continue
                raise
            local.append((t_fog - t0) * 1000)
            city.append((t_city - t0) * 1000)
        samples_s = time.time() - t_samples
        rejected = {"cloud": _get(cconn, "/api/v1/health")["partials"]["rejected"]}
        for f in fog_list:
            rejected[f.region] = _get(f.http, "/api/v1/health")["ingest"]["rejected"]
        if any(rejected.values()):
            log(f"  WARNING: rejections during the run: {rejected}")
        cost = tick_cost(fog_list[0])
        cs, ls, bs = stats(city), stats(local), stats(bridge)
        r = {
            "fogs": fogs, "meters_per_fog": meters, "samples": len(city), "dropped_at_midnight": dropped,
            "summary_interval_ms": interval_ms, "batch_max_delay_ms": GatewayConfig.batch_max_delay_ms
            if "batch_max_delay_ms" not in settings else settings["batch_max_delay_ms"],
            "poll_ms": poll_ms, "city": cs, "fog_local": ls, "bridge_one_way": bs,
            "goal_p99_ms": GOAL_MS, "p99_ratio_vs_goal": round(cs["p99_ms"] / GOAL_MS, 3),
            "p99_ratio_vs_fog_local": round(cs["p99_ms"] / ls["p99_ms"], 2),
            "p99_ratio_vs_bridge": round(cs["p99_ms"] / bs["p99_ms"], 1),
            "summary_tick": {**cost, "tick_p50_ratio_vs_interval": round(cost["tick_p50_ms"] / interval_ms, 4)},
            "rejected": rejected, "setup_seconds": round(setup_s, 1), "sampling_seconds": round(samples_s, 1),
        }
        log(f"  reading -> cloud top-10   p50 {cs['p50_ms']:7.1f} ms  p99 {cs['p99_ms']:7.1f} ms  "
            f"max {cs['max_ms']:7.1f} ms  (p99/goal {r['p99_ratio_vs_goal']:.2f})")
        log(f"  reading -> fog's top-10   p50 {ls['p50_ms']:7.1f} ms  p99 {ls['p99_ms']:7.1f} ms  "
            f"max {ls['max_ms']:7.1f} ms  (city/fog p99 ratio {r['p99_ratio_vs_fog_local']:.2f})")
        log(f"  summary tick at a fog ({meters} meters, top-{cost['top_k']}): p50 {cost['tick_p50_ms']} ms, "
            f"max {cost['tick_max_ms']} ms ({100 * cost['tick_p50_ms'] / interval_ms:.1f}% of the interval); "
            f"summary.compute p50 {cost['compute_p50_ms']} ms")
        log(f"  {len(city)} samples in {samples_s:.0f} s")
        return r
    finally:
        for f in fog_list:
            f.stop()
        if cloud is not None:
            cloud.stop()
        broker.stop()


def rows(r: dict) -> list[str]:
    c = r["city"]
    where = (f"city latency, reading -> cloud top-10, {r['fogs']} fogs x {r['meters_per_fog']} meters, "
             f"summary_interval_ms {r['summary_interval_ms']}")
    return [
        f"| {where} | p50 {c['p50_ms']} / p99 {c['p99_ms']} / max {c['max_ms']} ms | "
        f"reading -> fog's own top-10 p99 {r['fog_local']['p99_ms']} ms | {r['p99_ratio_vs_fog_local']} | "
        f"p99 <= 2000 ms (p99/goal {r['p99_ratio_vs_goal']:.2f}) |",
        f"| | | bridge fog -> cloud broker p99 {r['bridge_one_way']['p99_ms']} ms | {r['p99_ratio_vs_bridge']} | |",
        f"| summary tick at a fog, {r['meters_per_fog']} meters | p50 {r['summary_tick']['tick_p50_ms']} ms | "
        f"summary_interval_ms {r['summary_interval_ms']} | {r['summary_tick']['tick_p50_ratio_vs_interval']} | "
        f"<= 0.10 |",
    ]
