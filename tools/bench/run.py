"""`make bench`: AquaFog's benchmarks. Every figure is printed next to a reference
measured in the same run on the same machine, as a ratio; results go to
bench-results/bench.json.

ingest   Readings persisted per second by the gateway (QoS 1, PUBACK after commit,
         per-meter persistence acks) against two consumers of the same backlog on the
         same broker: a bare paho-mqtt subscriber that does nothing with the messages
         (the Python client's ceiling) and mosquitto_sub (the broker's ceiling).
         Method: every consumer holds a persistent session; the backlog is published
         while all are offline, then each drains it alone, so the consumer is the
         bottleneck and not the publisher.
ranking  GET /api/v1/ranking latency over HTTP (keep-alive) with 100k meters in the
         store, against GET /api/v1/health on the same server (the HTTP floor).
city     GET /api/v1/city/ranking at the cloud with partials from 10 fogs x 100k meters
         (top-1000 each), while a fog sends a new partial every 100 ms (so many requests
         merge afresh), against GET /api/v1/health on the same server.
city_latency  From a reading that moves a meter into the city top-10 to that change in the
         cloud's GET /api/v1/city/ranking?n=10, with real parts: cloud Mosquitto + `aquafog cloud`,
         2 fogs (Mosquitto bridged to the cloud's, gateway process) x 100k meters, default
         gateway settings; against the same reading showing in the fog's own ranking, and
         the bare MQTT path fog -> bridge -> cloud broker (tools/bench/city_latency.py).
live     From a meter's publish (QoS 1) to the server-sent event a client of the gateway's
         GET /api/v1/meters/<id>/live receives on loopback, with a few hundred other meters
         publishing meanwhile; against the same publish reaching a bare paho subscriber on the
         same broker (tools/bench/live_latency.py).
load     2,000 emulated meters (real firmware, each its own MQTT connection) reporting every 5 s,
         and a generator process bursting to 5x their rate for 5 minutes, through a real
         Mosquitto and gateway: nothing lost (the SQLite file against what was published and the
         meters' ground truth), RSS of the gateway's processes and Mosquitto over time, and the
         ingest lag (publish -> persistence ack) before, during and after the burst
         (tools/bench/load.py; also written to bench-results/load.json).
heap     The meter firmware's heap in use on real MicroPython (WebAssembly port) after
         main.py's start-up and one reporting cycle, compiled to .mpy as `make flash`
         installs it, against the same from .py sources (tools/bench/heap.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "backend"))

from aquafog.accounts import Accounts  # noqa: E402
from aquafog.broker import LocalBroker  # noqa: E402
from aquafog.cloud.store import ACCOUNTS as CLOUD_ACCOUNTS  # noqa: E402
from aquafog.localproc import ApiConnection  # noqa: E402
from aquafog.gateway.local import LocalGateway  # noqa: E402

sys.path.insert(0, str(ROOT / "tools" / "bench"))
import city_latency  # noqa: E402
from figures import log, pct  # noqa: E402
import heap  # noqa: E402
import live_latency  # noqa: E402
import load  # noqa: E402

PY = sys.executable
TOPIC = "aquafog/+/tele/reading"



# ------------------------------------------------------------------ gateway process

def make_gateway(workdir: Path, broker_port: int, db: Path) -> LocalGateway:
    return LocalGateway(workdir, broker_port, db_path=str(db), mqtt_client_id="bench-gateway", log_level="WARNING")


def health(conn: http.client.HTTPConnection) -> dict:
    conn.request("GET", "/api/v1/health")
    return json.loads(conn.getresponse().read())


# ------------------------------------------------------------------ city (cloud)

def bench_city(workdir: Path, fogs: int, meters_per_fog: int, k: int, count: int) -> dict:
    import random
    import threading

    from aquafog.bridge import cloud_summary_topic
    from aquafog.broker import free_port
    from aquafog.cloud.service import Cloud
    from aquafog.config import CloudConfig
    from aquafog.federation import Partial, encode_partial, period_key
    from aquafog.periods import Calendar, day_key

    broker = LocalBroker(workdir / "broker-city").start()
    cloud = Cloud(CloudConfig(db_url=f"sqlite:///{workdir / 'cloud.db'}", mqtt_port=broker.port,
                              http_port=free_port(), log_level="WARNING")).start()
    if not cloud.subscribed.wait(10):
        raise RuntimeError("the cloud did not subscribe to the fogs' summaries")
    rng = random.Random(1)
    key = period_key("day", day_key(Calendar("UTC").today(time.time())))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-fogs")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    seq = [0]

    def send(i: int) -> None:
        # the fog's top-k out of meters_per_fog meters: only the list and the totals travel
        usage = sorted(((f"f{i}m{j:06d}", rng.randrange(0, 2_000_000)) for j in range(k)),
                       key=lambda kv: (-kv[1], kv[0]))
        seq[0] += 1
        p = Partial(f"fog{i}", "day", key, seq[0], int(time.time() * 1000), meters_per_fog,
                    sum(ml for _, ml in usage) * 50, k, tuple(usage))
        pub.publish(cloud_summary_topic(p.region, "day", key), encode_partial(p), qos=1).wait_for_publish(10)

    stop = threading.Event()
    try:
        for i in range(fogs):
            send(i)
        deadline = time.monotonic() + 30
        while len(cloud.view.partials("day", key)) < fogs:
            if time.monotonic() > deadline:
                raise RuntimeError("the cloud did not take the fogs' partials")
            time.sleep(0.05)

        def churn() -> None:
            while not stop.wait(0.1):
                send(rng.randrange(fogs))

        with cloud.engine.begin() as c:  # an admin's token, as `aquafog token add --cloud` makes
            accounts = Accounts(CLOUD_ACCOUNTS)
            accounts.add_user(c, "bench", "admin", secrets.token_urlsafe(18))
            token = accounts.add_token(c, "bench", "bench")[1]
        conn = ApiConnection(cloud.http_port, token)
        _latencies(conn, "/api/v1/city/ranking?n=10", 200)
        floor = _latencies(conn, "/api/v1/health", count)
        accepted0 = cloud.accepted
        threading.Thread(target=churn, daemon=True).start()
        results = {"fogs": fogs, "meters": fogs * meters_per_fog, "k": k, "requests_each": count,
                   "health_p99_ms": round(pct(floor, 99), 3), "goal_p99_ms": 10.0, "cases": {}}
        for n in (10, 100, 1000):
            path = f"/api/v1/city/ranking?n={n}"
            lat = _latencies(conn, path, count)
            p99 = pct(lat, 99)
            results["cases"][path] = {"p50_ms": round(pct(lat, 50), 3), "p99_ms": round(p99, 3),
                                      "p99_ratio_vs_health": round(p99 / pct(floor, 99), 2)}
            log(f"  {path:34s} p50 {pct(lat, 50):6.2f} ms  p99 {p99:6.2f} ms  "
                f"(health p99 {pct(floor, 99):.2f} ms, ratio {p99 / pct(floor, 99):.2f})")
        results["partials_during_run"] = cloud.accepted - accepted0
        return results
    finally:
        stop.set()
        pub.disconnect()
        pub.loop_stop()
        cloud.stop()
        broker.stop()


# ------------------------------------------------------------------ ingest

def publish_backlog(port: int, n: int, meters: int) -> float:
    """n valid readings spread over `meters` meters; returns the publish rate."""
    p = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-loadgen")
    p.max_inflight_messages_set(1000)
    p.connect("127.0.0.1", port)
    p.loop_start()
    seqs = [0] * meters
    t_base = int(time.time()) - 2 * 86400
    t0 = time.time()
    info = None
    for i in range(n):
        m = i % meters
        s = seqs[m]
        seqs[m] += 1
        ml = s * 137
        payload = ('{"v":1,"boot":"0badc0de","seq":%d,"ts":%d,"pulses":%d,"litres":%d.%03d,"flow":2.500,'
                   '"valve":"open"}' % (s, t_base + s, ml * 45 // 100, ml // 1000, ml % 1000))
        info = p.publish(f"aquafog/b{m:06d}/tele/reading", payload, qos=1)
        if i % 5000 == 4999:
            info.wait_for_publish()
    info.wait_for_publish()
    rate = n / (time.time() - t0)
    p.disconnect()
    p.loop_stop()
    return rate


def bench_ingest(workdir: Path, n: int, meters: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(workdir / "broker").start()
    try:
        db = workdir / "ingest.db"
        gw = make_gateway(workdir, broker.port, db)
        gw.register([f"b{m:06d}" for m in range(meters)])
        gw.start().stop()  # its persistent session now waits for the backlog
        sub_args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-c", "-i", "bench-msub",
                    "-t", TOPIC]
        subprocess.run(sub_args + ["-E"], check=True)
        bare = [PY, str(Path(__file__).with_name("bare_subscriber.py")), "127.0.0.1", str(broker.port),
                "bench-paho", TOPIC]
        subprocess.run(bare + ["setup"], check=True)

        log(f"ingest: publishing a backlog of {n} readings from {meters} meters ...")
        pub_rate = publish_backlog(broker.port, n, meters)

        t0 = time.time()
        subprocess.run(sub_args + ["-C", str(n)], check=True, stdout=subprocess.DEVNULL)
        msub = n / (time.time() - t0)
        log(f"  mosquitto_sub        {msub:10.0f} msg/s")

        out = subprocess.run(bare + ["drain", str(n)], check=True, capture_output=True, text=True).stdout
        r = json.loads(out)
        paho = (r["n"] - 1) / (r["last"] - r["first"])
        log(f"  bare paho subscriber {paho:10.0f} msg/s")

        gw.start()
        hc = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=10)
        deadline = time.time() + 600
        while True:
            h = health(hc)
            if h["ingest"]["accepted"] >= n:
                t_end = time.time()
                break
            if time.time() > deadline:
                raise TimeoutError(f"gateway persisted {h['ingest']['accepted']} of {n}")
            time.sleep(0.01)
        rss_kb = _rss_kb(gw.proc.pid)
        gw.stop()
        with sqlite3.connect(db) as con:
            t_first = con.execute("select min(rx_ms) from readings").fetchone()[0] / 1000
            stored = con.execute("select count(*) from readings").fetchone()[0]
        gateway = n / (t_end - t_first)
        log(f"  aquafog gateway      {gateway:10.0f} readings/s persisted ({stored} rows)")
        return {
            "readings": n, "meters": meters, "publish_rate": round(pub_rate),
            "mosquitto_sub_msg_s": round(msub), "bare_paho_msg_s": round(paho),
            "gateway_persisted_s": round(gateway), "gateway_rows": stored,
            "gateway_core_rss_kb": rss_kb,
            "ratio_vs_bare_paho": round(gateway / paho, 3), "ratio_vs_mosquitto_sub": round(gateway / msub, 3),
            "goal_ratio_vs_bare_paho": 0.8,
        }
    finally:
        broker.stop()


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# ------------------------------------------------------------------ ranking

def populate(db: Path, meters: int, prefix: str = "r") -> float:
    """100k meters (ids <prefix>000000 ...) with two readings each today, through the gateway's own accounting."""
    from aquafog.gateway.accounting import Accounting
    from aquafog.periods import Calendar
    from aquafog.protocol import Reading
    from aquafog.store.engine import open_engine
    from aquafog.store.registry import add_meters
    engine = open_engine(db)
    ids = [f"{prefix}{m:06d}" for m in range(meters)]
    add_meters(engine, ids)
    acc = Accounting(Calendar("UTC"), engine.dialect)
    now = int(time.time())
    t0 = time.time()
    for i in range(0, meters, 5000):
        chunk = ids[i:i + 5000]
        with engine.begin() as conn:
            acc.load(conn, chunk)
            b = acc.begin_batch()
            for j, m in enumerate(chunk, i):
                used = (j * 7919) % 500_000
                b.reading(conn, acc.states[m], Reading(m, "0badc0de", 0, now - 120, 0, 1000, 0, "open"), 0)
                b.reading(conn, acc.states[m], Reading(m, "0badc0de", 1, now - 60, used, 1000 + used, 0, "open"), 0)
            b.write(conn)
    engine.dispose()
    return time.time() - t0


def _latencies(conn: http.client.HTTPConnection, path: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        out.append((time.perf_counter() - t0) * 1000)
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status} {body[:200]!r}")
    return out



def bench_ranking(workdir: Path, meters: int, count: int) -> dict:
    broker = LocalBroker(workdir / "broker-rank").start()
    try:
        db = workdir / "ranking.db"
        log(f"ranking: filling the store with {meters} meters ...")
        fill_s = populate(db, meters)
        gw = make_gateway(workdir, broker.port, db).start()
        conn = gw.connection()
        _latencies(conn, "/api/v1/ranking?n=10", 200)  # warm up caches
        floor = _latencies(conn, "/api/v1/health", count)
        results = {"meters": meters, "requests_each": count, "fill_seconds": round(fill_s, 1),
                   "health_p50_ms": round(pct(floor, 50), 3), "health_p99_ms": round(pct(floor, 99), 3),
                   "goal_p99_ms": 10.0, "cases": {}}
        for path in ("/api/v1/ranking?n=10&period=today", "/api/v1/ranking?n=100&period=month",
                     "/api/v1/ranking?n=1000&period=today"):
            lat = _latencies(conn, path, count)
            p99 = pct(lat, 99)
            results["cases"][path] = {"p50_ms": round(pct(lat, 50), 3), "p99_ms": round(p99, 3),
                                      "mean_ms": round(statistics.fmean(lat), 3),
                                      "p99_ratio_vs_health": round(p99 / pct(floor, 99), 2)}
            log(f"  {path:40s} p50 {pct(lat, 50):6.2f} ms  p99 {p99:6.2f} ms  "
                f"(health p99 {pct(floor, 99):.2f} ms, ratio {p99 / pct(floor, 99):.2f})")
        gw.stop()
        return results
    finally:
        broker.stop()


# ------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("ingest", "ranking", "city", "city_latency", "live", "load", "heap"))
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--meters", default=None,
                    help="ingest: meters in the backlog, a comma-separated list runs one benchmark each "
                         "(default 1000,10000); load: emulated meters (default 2000)")
    ap.add_argument("--ranking-meters", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--city-fogs", type=int, default=2, help="city_latency: fogs (each Mosquitto + bridge + gateway)")
    ap.add_argument("--city-meters", type=int, default=100_000, help="city_latency: registered meters per fog")
    ap.add_argument("--city-samples", type=int, default=100, help="city_latency: readings timed to the cloud")
    ap.add_argument("--city-summary-interval-ms", type=int,
                    help="city_latency: the fogs' summary_interval_ms (default: the gateway's default)")
    ap.add_argument("--live-samples", type=int, default=300, help="live: readings timed to their SSE event")
    ap.add_argument("--live-meters", type=int, default=300, help="live: other meters publishing meanwhile")
    ap.add_argument("--live-rate", type=float, default=300.0, help="live: their readings per second, in total")
    ap.add_argument("--interval-s", type=int, default=5, help="load: seconds between a meter's readings")
    ap.add_argument("--factor", type=float, default=5.0, help="load: the burst's rate over the normal rate")
    ap.add_argument("--burst-s", type=float, default=300.0, help="load: the burst's length")
    ap.add_argument("--pre-s", type=float, default=60.0, help="load: normal load before the burst (the reference)")
    ap.add_argument("--post-s", type=float, default=120.0, help="load: normal load after the burst")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "bench.json"))
    args = ap.parse_args()
    if not shutil.which("mosquitto_sub"):
        print("bench: mosquitto_sub is missing; run `make deps`", file=sys.stderr)
        return 2
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="aquafog-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "ingest"):
            results["ingest"] = []
            for i, meters in enumerate(int(m) for m in (args.meters or "1000,10000").split(",")):
                results["ingest"].append(bench_ingest(work / f"ingest{i}", args.readings, meters))
        if args.only in (None, "ranking"):
            results["ranking"] = bench_ranking(work, args.ranking_meters, args.requests)
        if args.only in (None, "city"):
            results["city"] = bench_city(work, 10, 100_000, 1000, args.requests)
        if args.only in (None, "city_latency"):
            results["city_latency"] = city_latency.measure(work / "city-latency", populate, args.city_fogs,
                                                           args.city_meters, args.city_samples,
                                                           args.city_summary_interval_ms)
        if args.only in (None, "live"):
            results["live"] = live_latency.measure(work / "live", args.live_samples, args.live_meters,
                                                   args.live_rate)
        if args.only in (None, "load"):
            results["load"] = load.measure(work / "load", int(args.meters or 2000), args.interval_s, args.factor,
                                           args.burst_s, args.pre_s, args.post_s)
            dest = Path(args.out).with_name("load.json")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps({"machine": results["machine"], "at": results["at"], **results["load"]},
                                       indent=2) + "\n")
        if args.only in (None, "heap"):
            results["heap"] = heap.measure()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print("| benchmark | figure | reference (same run) | ratio | goal |")
    print("|---|---|---|---|---|")
    for r in results.get("ingest", []):
        print(f"| ingest, QoS 1, {r['meters']} meters | {r['gateway_persisted_s']} readings/s persisted | "
              f"bare paho {r['bare_paho_msg_s']} msg/s | {r['ratio_vs_bare_paho']:.2f} | >= 0.80 |")
        print(f"| | | mosquitto_sub {r['mosquitto_sub_msg_s']} msg/s | {r['ratio_vs_mosquitto_sub']:.2f} | |")
    if "ranking" in results:
        r = results["ranking"]
        for path, c in r["cases"].items():
            print(f"| ranking, {r['meters']} meters, {path.split('?')[1]} | p99 {c['p99_ms']} ms | "
                  f"health p99 {r['health_p99_ms']} ms | {c['p99_ratio_vs_health']} | p99 <= 10 ms |")
    if "city" in results:
        r = results["city"]
        for path, c in r["cases"].items():
            print(f"| city ranking at the cloud, {r['fogs']} fogs x {r['meters'] // r['fogs']} meters, "
                  f"{path.split('?')[1]} | p99 {c['p99_ms']} ms | health p99 {r['health_p99_ms']} ms | "
                  f"{c['p99_ratio_vs_health']} | p99 <= 10 ms |")
    if "city_latency" in results:
        for line in city_latency.rows(results["city_latency"]):
            print(line)
    if "live" in results:
        print(live_latency.row(results["live"]))
    if "load" in results:
        for line in load.row(results["load"]):
            print(line)
    if "heap" in results:
        print(heap.row(results["heap"]))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
