"""load: the fog holds a burst (issue 6: "2,000 emulated meters, each on its own
connection, plus a load generator bursting at 5x the normal rate for 5 minutes: nothing
lost, memory bounded, ingest lag back to normal within a minute after the burst").

Real parts only: a Mosquitto (persistence on) and an `aquafog gateway` process with its
default settings (batch_max_delay_ms 250, ack_interval_ms 1000); `meters` emulated meters
running the real firmware (tools/emulator, each its own MQTT connection) at speed 1, a
reading every `interval_s` real seconds each: the normal rate is meters / interval_s.

Three more processes, each with its own MQTT connections (this file, run as a script):
  generator  publishes well-formed readings (QoS 1, the meters' protocol) of synthetic meters
             g00001... registered at the gateway, each meter in order (one boot, seq 0, 1, 2 ...,
             its register growing), at (factor - 1) x the normal rate from the burst's start for
             `burst_s`, so the total is `factor` x normal; then it waits for every PUBACK and
             writes how many it published.
  probe      a few probe meters p01... publish a reading in turn every `probe_every_s` all along;
             the lag of one is from its publish to the gateway's persistence ack (cmnd/ack, sent
             only after the commit) naming that seq: the ingest lag as a meter sees it.
  (the bench process itself runs the fleet and samples every `sample_s`: the RSS and CPU of
  every gateway process (the core and its receiver, found as children), of Mosquitto, of the
  fleet and of the generator, from /proc; and GET /api/v1/health's ingest counters.)

Phases: the fleet starts; once every meter has reported, `pre_s` of normal load (the lag's
reference), then the burst, then `post_s` of normal load. At the end the water stops, every
meter reports once more and the fleet freezes (settle()); once the gateway has stored as many
readings as were published it stops, and its SQLite file is read (read-only): every distinct
(boot, seq) a meter published is stored, every meter's stored register equals its ground
truth, every generated and probe reading is stored.

Lag figures: the reference is the probes' lag before the burst (p50, p99); "normal" is at
most max(2 x reference p99, reference p99 + 250 ms); the recovery time is from the burst's end
to the first moment after which no probe is above normal. RSS is bounded if the gateway's
RSS at the end of the burst is at most its RSS before it + SQLITE_CACHE_MB (the store's page
cache, which fills as the file grows) + PER_NEW_METER_KB for each meter first seen in the burst.

    load.py generator PORT PREFIX METERS RATE T_START BURST_S OUT
    load.py probe PORT PREFIX PROBES EVERY_S OUT
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from figures import log, pct

ROOT = Path(__file__).resolve().parents[2]
RECOVERY_GOAL_S = 60.0
GEN_LEAD_S = 3.0  # the generator starts this long before the burst (its imports and connections)
# "Bounded": the gateway's RSS may grow by what its configuration allows and no more: SQLite's
# page cache (store/engine.py, PRAGMA cache_size=-65536), which fills as the file grows (a
# store alone: RSS flat at +64 MiB from about 1.1 million readings on, the file still growing),
# plus the state of each meter first seen (the generated ones, at most 2 KiB each).
SQLITE_CACHE_MB = 64.0
PER_NEW_METER_KB = 2.0
GEN_PREFIX, PROBE_PREFIX = "g", "p"
GEN_BOOT, PROBE_BOOT = "9e4e2a70", "9b0be000"
TICK = os.sysconf("SC_CLK_TCK")


def reading(boot: str, seq: int, ts: int) -> bytes:
    ml = seq * 1250  # 1.25 l a reading; pulses at the firmware's default k-factor (450/l)
    return ('{"v":1,"boot":"%s","seq":%d,"ts":%d,"pulses":%d,"litres":%d.%03d,"flow":15.000,"valve":"open"}'
            % (boot, seq, ts, ml * 450 // 1000, ml // 1000, ml % 1000)).encode()


def gen_ids(n: int) -> list[str]:
    return [f"{GEN_PREFIX}{i:05d}" for i in range(1, n + 1)]


def probe_ids(n: int) -> list[str]:
    return [f"{PROBE_PREFIX}{i:02d}" for i in range(1, n + 1)]


# ------------------------------------------------------------------ generator (own process)

def generator(port: int, meters: int, rate: float, t_start: float, burst_s: float, out: Path,
              connections: int = 4) -> None:
    """Publish reading i (meter i % meters, seq i // meters) at t_start + i / rate, until
    t_start + burst_s (or SIGTERM); wait for every PUBACK; write the count and the pacing."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ids = gen_ids(meters)
    topics = [f"aquafog/{m}/tele/reading" for m in ids]
    acked = [0]
    lock = threading.Lock()

    def on_publish(*_):
        with lock:
            acked[0] += 1
    clients = []
    for k in range(connections):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-load-gen-{k}")
        c.max_inflight_messages_set(2000)
        c.max_queued_messages_set(0)
        c.on_publish = on_publish
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append(c)
    per_s: dict[int, int] = {}
    behind_max = 0.0
    i = 0
    if t_start > time.time():
        stop.wait(t_start - time.time())
    t_end = t_start + burst_s
    while not stop.is_set():
        now = time.time()
        if now >= t_end:
            break
        due = min(int((now - t_start) * rate) + 1, int(burst_s * rate))
        if due > i + 1:
            behind_max = max(behind_max, (due - i - 1) / rate)
        ts = int(now)
        while i < due:
            m = i % meters
            clients[m % connections].publish(topics[m], reading(GEN_BOOT, i // meters, ts), qos=1)
            i += 1
        sec = int(now - t_start)
        per_s[sec] = i
        ahead = t_start + i / rate - time.time()
        stop.wait(max(0.002, min(ahead, 0.05)))
    deadline = time.monotonic() + 120
    while acked[0] < i and time.monotonic() < deadline:
        time.sleep(0.05)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    out.write_text(json.dumps({"published": i, "acked": acked[0], "meters": meters, "rate": rate,
                               "t_start": t_start, "t_stop": time.time(), "behind_max_s": round(behind_max, 3),
                               "cumulative_by_s": per_s}))


# ------------------------------------------------------------------ probe (own process)

def probe(port: int, n: int, every_s: float, out: Path) -> None:
    """Probe meters publish in turn every `every_s`; each lag: publish -> the ack that covers it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ids = probe_ids(n)
    cond = threading.Condition()
    sent: dict[tuple[str, int], float] = {}   # (meter, seq) -> wall time of the publish
    lags: list[tuple[float, float]] = []      # (publish wall time, lag ms)
    subscribed = threading.Event()

    def on_message(_c, _u, msg):
        t = time.time()
        meter = msg.topic.split("/")[1]
        a = json.loads(msg.payload)
        if a.get("boot") != PROBE_BOOT or a.get("seq") is None:
            return
        with cond:
            for key in [k for k in sent if k[0] == meter and k[1] <= a["seq"]]:
                t0 = sent.pop(key)
                lags.append((t0, (t - t0) * 1000))
            cond.notify_all()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-load-probe")
    c.on_message = on_message
    c.on_subscribe = lambda *_: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe([(f"aquafog/{m}/cmnd/ack", 0) for m in ids])
    subscribed.wait(10)
    seqs = [0] * n
    k = 0
    t0 = time.monotonic()
    while not stop.is_set():
        m = k % n
        with cond:
            sent[(ids[m], seqs[m])] = time.time()
        c.publish(f"aquafog/{ids[m]}/tele/reading", reading(PROBE_BOOT, seqs[m], int(time.time())), qos=1)
        seqs[m] += 1
        k += 1
        stop.wait(max(0.0, t0 + k * every_s / n - time.monotonic()))
    with cond:  # the last acks come within a batch delay
        cond.wait_for(lambda: not sent, 10)
    c.disconnect()
    c.loop_stop()
    with cond:
        out.write_text(json.dumps({"published": seqs, "lags": sorted(lags), "unacked": len(sent)}))


# ------------------------------------------------------------------ sampling from /proc

def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def _proc(pid: int) -> tuple[int, float] | None:
    """(RSS kB, CPU seconds) of one process."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return rss, (int(f[11]) + int(f[12])) / TICK
    except (OSError, StopIteration, IndexError, ValueError):
        return None


class Sampler(threading.Thread):
    """Every `every_s`: RSS and CPU of each watched process, and the gateway's ingest counters."""

    def __init__(self, every_s: float, gateway_pid: int, http_port: int, fixed: dict[str, int]):
        super().__init__(name="load-sampler", daemon=True)
        self.every_s, self.gateway_pid, self.http_port = every_s, gateway_pid, http_port
        self.fixed = fixed  # role -> pid
        self.samples: list[dict] = []
        self.halt = threading.Event()

    def roles(self) -> dict[str, int]:
        roles = {"gateway-core": self.gateway_pid}
        for pid in _children(self.gateway_pid):  # the receiver (and multiprocessing's helpers)
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            roles["gateway-tracker" if b"resource_tracker" in cmd else "gateway-receiver"] = pid
        return {**roles, **self.fixed}

    def sample(self) -> dict:
        s = {"t": time.time(), "rss_kb": {}, "cpu_s": {}}
        for role, pid in self.roles().items():
            p = _proc(pid)
            if p is not None:
                s["rss_kb"][role], s["cpu_s"][role] = p
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
            c.request("GET", "/api/v1/health")
            s["ingest"] = json.loads(c.getresponse().read())["ingest"]
            c.close()
        except (OSError, ValueError, KeyError):
            s["ingest"] = None
        return s

    def run(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self.halt.wait(self.every_s):
                return


# ------------------------------------------------------------------ the run

def _stop_proc(p: subprocess.Popen | None, timeout: float = 150) -> None:
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _at(samples: list[dict], t: float) -> dict:
    """The sample nearest to wall time t."""
    return min(samples, key=lambda s: abs(s["t"] - t))


def _rate(samples: list[dict], t0: float, t1: float) -> float | None:
    a, b = _at(samples, t0), _at(samples, t1)
    if not (a.get("ingest") and b.get("ingest")) or b["t"] <= a["t"]:
        return None
    return (b["ingest"]["accepted"] - a["ingest"]["accepted"]) / (b["t"] - a["t"])


def lag_figures(lags: list[tuple[float, float]], t_burst: float, t_end: float, pre_s: float) -> dict:
    ref = [lag for t, lag in lags if t_burst - pre_s <= t < t_burst]
    during = [lag for t, lag in lags if t_burst <= t < t_end]
    after = [(t, lag) for t, lag in lags if t >= t_end]
    if not ref or not after:
        raise RuntimeError(f"too few probe samples: {len(ref)} before the burst, {len(after)} after it")
    ref_p50, ref_p99 = pct(ref, 50), pct(ref, 99)
    normal = max(2 * ref_p99, ref_p99 + 250.0)
    high = [t for t, lag in after if lag > normal]
    if not high:
        recovery = 0.0
    else:  # the first probe after the last one above normal: within normal from then on
        later = [t for t, _ in after if t > max(high)]
        recovery = min(later) - t_end if later else None
    return {
        "samples": {"before": len(ref), "during": len(during), "after": len(after)},
        "before": {"p50_ms": round(ref_p50, 1), "p99_ms": round(ref_p99, 1), "max_ms": round(max(ref), 1)},
        "during": {"p50_ms": round(pct(during, 50), 1), "p99_ms": round(pct(during, 99), 1),
                   "max_ms": round(max(during), 1)} if during else None,
        "after": {"p50_ms": round(pct([x for _, x in after], 50), 1),
                  "p99_ms": round(pct([x for _, x in after], 99), 1)},
        "normal_max_ms": round(normal, 1),
        "recovery_s": None if recovery is None else round(recovery, 1),
        "recovery_goal_s": RECOVERY_GOAL_S,
        "peak_ratio_vs_before_p99": round(max(during) / ref_p99, 2) if during else None,
        "series": _lag_series(lags, t_burst, 30.0),
    }


def _lag_series(lags, t_burst: float, window_s: float) -> list[dict]:
    """p50 and max lag per window, times relative to the burst's start."""
    out: dict[int, list[float]] = {}
    for t, lag in lags:
        out.setdefault(int((t - t_burst) // window_s), []).append(lag)
    return [{"t_s": int(k * window_s), "p50_ms": round(pct(v, 50), 1), "max_ms": round(max(v), 1), "n": len(v)}
            for k, v in sorted(out.items())]


def settle(fleet, timeout: float) -> None:
    """Stop all water, have every meter report once more, then freeze the fleet (no step runs).

    Fleet.quiesce waits until every outbox is empty at one moment, which never comes with
    thousands of meters each reporting every few seconds (a hundred readings are always in
    flight); here each meter only has to have sent a reading taken after the water stopped,
    so its last reading carries the ground truth. What the meters published, the broker
    acknowledged: the gateway's session holds it until it is stored."""
    t = fleet.clock.now()
    for m in fleet.meters:
        m.line.stop(t)
    for m in fleet.meters:
        with m.step_lock:
            if m.powered:
                m.app.request_reading()
        fleet.scheduler.wake(m)

    def reported() -> bool:
        return all(m.sent and (m.sent[-1]["taken"] or 0) >= t for m in fleet.meters if m.powered)
    fleet.wait_for(reported, timeout, "every meter reporting after the water stopped")
    fleet.scheduler.pause()


def _stored(sample: dict) -> int:
    i = sample.get("ingest") or {}
    return i.get("accepted", 0) + i.get("late", 0)


def check_store(db: Path, fleet, gen: dict, probes: dict) -> dict:
    """Read the gateway's SQLite file (read-only): what is missing, per kind of sender."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored: dict[str, set] = {}
        for meter, boot, seq in con.execute(
                "select m.meter, b.boot, r.seq from readings r join meters m on m.pk = r.meter_pk "
                "join meter_boots b on b.meter_pk = r.meter_pk and b.boot_idx = r.boot_idx"):
            stored.setdefault(meter, set()).add((boot, seq))
        registers = dict(con.execute("select meter, ml from meters"))
    finally:
        con.close()
    truth = fleet.ground_truth()
    meters_missing, meters_sent, litres_wrong = 0, 0, []
    for m in fleet.meters:
        sent = {(r["boot"], r["seq"]) for r in m.sent}
        meters_sent += len(sent)
        meters_missing += len(sent - stored.get(m.id, set()))
        if registers.get(m.id) != truth[m.id]["ml"]:
            litres_wrong.append((m.id, registers.get(m.id), truth[m.id]["ml"]))
    n, total = gen["meters"], gen["published"]
    gen_missing = 0
    for k, mid in enumerate(gen_ids(n)):
        want = total // n + (1 if k < total % n else 0)
        gen_missing += len({(GEN_BOOT, s) for s in range(want)} - stored.get(mid, set()))
    probe_missing = sum(len({(PROBE_BOOT, s) for s in range(cnt)} - stored.get(mid, set()))
                        for mid, cnt in zip(probe_ids(len(probes["published"])), probes["published"]))
    return {
        "meters": {"readings": meters_sent, "missing": meters_missing, "litres_wrong": len(litres_wrong),
                   "litres_wrong_first": litres_wrong[:5]},
        "generator": {"readings": total, "missing": gen_missing},
        "probes": {"readings": sum(probes["published"]), "missing": probe_missing},
        "lost": meters_missing + gen_missing + probe_missing,
        "rows": sum(len(v) for v in stored.values()),
    }


def rss_figures(samples: list[dict], t_burst: float, t_end: float, t_last: float, new_meters: int,
                window_s: float = 30.0) -> dict:
    def mb(s, role):
        v = s["rss_kb"].get(role)
        return None if v is None else round(v / 1024, 1)
    roles = sorted({r for s in samples for r in s["rss_kb"]})
    gw_roles = [r for r in roles if r.startswith("gateway")]

    def gw(s):
        return round(sum(s["rss_kb"].get(r, 0) for r in gw_roles) / 1024, 1)
    series, last = [], None
    for s in samples:
        k = int((s["t"] - t_burst) // window_s)
        if k != last:
            last = k
            series.append({"t_s": round(s["t"] - t_burst), "gateway_mb": gw(s),
                           **{f"{r}_mb": mb(s, r) for r in roles}})
    before, end, after = _at(samples, t_burst), _at(samples, t_end), _at(samples, t_last)
    cpu = {}
    for r in roles:  # the first and last samples of the burst that saw the process (the generator exits at its end)
        seen = [s for s in samples if t_burst <= s["t"] <= t_end + 1 and r in s["cpu_s"]]
        if len(seen) >= 2 and seen[-1]["t"] > seen[0]["t"]:
            a, b = seen[0], seen[-1]
            cpu[r] = round((b["cpu_s"][r] - a["cpu_s"][r]) / (b["t"] - a["t"]) * 100, 1)
    return {
        "roles": roles,
        "gateway_mb": {"before_burst": gw(before), "end_of_burst": gw(end), "end": gw(after),
                       "max": max(gw(s) for s in samples)},
        "mosquitto_mb": {"before_burst": mb(before, "mosquitto"), "end_of_burst": mb(end, "mosquitto"),
                         "end": mb(after, "mosquitto"),
                         "max": max((mb(s, "mosquitto") or 0) for s in samples)},
        "gateway_growth_in_burst": round(gw(end) / gw(before), 3),
        "gateway_bound_mb": round(gw(before) + SQLITE_CACHE_MB + new_meters * PER_NEW_METER_KB / 1024, 1),
        "cpu_percent_during_burst": cpu,
        "series": series,
    }


def measure(workdir: Path, meters: int = 2000, interval_s: int = 5, factor: float = 5.0, burst_s: float = 300,
            pre_s: float = 60, post_s: float = 120, probes: int = 10, probe_every_s: float = 0.2,
            sample_s: float = 2.0, workers: int = 16, gateway_settings: dict | None = None,
            ready_timeout_s: float | None = None) -> dict:
    sys.path.insert(0, str(ROOT / "tools"))
    from emulator import Fleet, meter_ids

    from aquafog.broker import LocalBroker
    from aquafog.gateway.local import LocalGateway

    workdir.mkdir(parents=True, exist_ok=True)
    normal = meters / interval_s
    extra = normal * (factor - 1)
    # synthetic meters, each a reading per interval_s like a meter (registered with a margin: the
    # generator's rate is set from the rate measured before the burst)
    n_gen = max(1, round(extra * interval_s * 1.5))
    broker = LocalBroker(workdir / "broker").start()
    gw = fleet = gen = prb = sampler = None
    try:
        gw = LocalGateway(workdir / "gateway", broker.port, db_path=str(workdir / "load.db"),
                          mqtt_client_id="bench-load", log_level="WARNING", **(gateway_settings or {}))
        ids = meter_ids(meters, "m")
        gw.register(ids + gen_ids(n_gen) + probe_ids(probes))
        gw.start()
        sampler = Sampler(sample_s, gw.proc.pid, gw.http_port, {"mosquitto": broker.proc.pid, "fleet": os.getpid()})
        sampler.start()
        log(f"load: {meters} emulated meters (a reading every {interval_s} s each: {normal:.0f}/s), "
            f"burst x{factor:g} for {burst_s:.0f} s (+{extra:.0f}/s from {n_gen} generated meters) ...")
        t0 = time.monotonic()
        fleet = Fleet("127.0.0.1", broker.port, ids, seed=3, speed=1.0, start_epoch=time.time() - 5,
                      report_interval_s=interval_s, workers=workers)
        fleet.start()
        ready = ready_timeout_s or max(60.0, meters * 0.05 + 2 * interval_s)
        fleet.wait_for(lambda: all(m.sent for m in fleet.meters), ready, "every meter reporting")
        log(f"  fleet up: every meter reporting after {time.monotonic() - t0:.1f} s")
        prb_out, gen_out = workdir / "probe.json", workdir / "generator.json"
        prb = subprocess.Popen([sys.executable, __file__, "probe", str(broker.port), str(probes),
                                str(probe_every_s * probes), str(prb_out)])
        sampler.fixed["probe"] = prb.pid
        t_burst = time.time() + pre_s
        t_end = t_burst + burst_s
        _wait_logging(sampler, t_burst - GEN_LEAD_S, t_burst, t_end)
        # the generator adds (factor - 1) x the normal rate as measured (the probes and the
        # meters' other messages included), so the total is factor x normal
        measured = _rate(sampler.samples, t_burst - pre_s + min(10.0, pre_s / 3), time.time()) or normal
        extra = measured * (factor - 1)
        n_run = min(n_gen, max(1, round(extra * interval_s)))
        gen = subprocess.Popen([sys.executable, __file__, "generator", str(broker.port), str(n_run), str(extra),
                                str(t_burst), str(burst_s), str(gen_out)])
        sampler.fixed["generator"] = gen.pid
        _wait_logging(sampler, t_end + post_s, t_burst, t_end)
        gen.wait(180)
        if gen.returncode != 0 or not gen_out.exists():
            raise RuntimeError(f"the generator failed (exit {gen.returncode})")
        gen_r = json.loads(gen_out.read_text())
        t_last = time.time()
        log("  taking in every meter's data ...")
        settle(fleet, 120)
        _stop_proc(prb, 30)
        prb_r = json.loads(prb_out.read_text())
        expected = sum(len({(r["boot"], r["seq"]) for r in m.sent}) for m in fleet.meters) + \
            gen_r["published"] + sum(prb_r["published"])
        deadline = time.monotonic() + 120
        while _stored(sampler.sample()) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        sampler.halt.set()
        sampler.join()
        samples = sampler.samples
        gw.stop()
        store = check_store(workdir / "load.db", fleet, gen_r, prb_r)
        lag = lag_figures([tuple(x) for x in prb_r["lags"]], t_burst, t_end, pre_s)
        rss = rss_figures(samples, t_burst, t_end, t_last, gen_r["meters"])
        rss["store_file_mb"] = round(sum(p.stat().st_size for p in workdir.glob("load.db*")) / 2**20, 1)
        r = {
            "meters": meters, "interval_s": interval_s, "factor": factor, "burst_s": burst_s, "pre_s": pre_s,
            "post_s": post_s, "generated_meters": n_gen, "probes": probes, "probe_every_s": probe_every_s,
            "rates": {
                "normal_nominal_s": round(normal, 1),
                "before_burst_s": _round(_rate(samples, t_burst - pre_s * 0.8, t_burst)),
                "during_burst_s": _round(_rate(samples, t_burst + 5, t_end)),
                "after_burst_s": _round(_rate(samples, t_end + 10, t_last)),
                "generator_set_s": round(gen_r["rate"], 1),
                "generator_published": gen_r["published"],
                "generator_s": round(gen_r["published"] / burst_s, 1),
                "generator_behind_max_s": gen_r["behind_max_s"],
            },
            "store": store, "lag": lag, "rss": rss,
            "fleet": {k: v for k, v in fleet.stats().items() if k != "sim_time"},
            "probe_unacked_at_stop": prb_r["unacked"],
        }
        rb, rd = r["rates"]["before_burst_s"], r["rates"]["during_burst_s"]
        r["rates"]["achieved_factor"] = round(rd / rb, 2) if rb and rd else None
        _print(r)
        return r
    finally:
        if sampler is not None:
            sampler.halt.set()
        _stop_proc(gen, 10)
        _stop_proc(prb, 10)
        if fleet is not None:
            fleet.stop()
        if gw is not None:
            gw.stop()
        broker.stop()


def _round(x):
    return None if x is None else round(x, 1)


def _wait_logging(sampler: Sampler, until: float, t_burst: float, t_end: float, every_s: float = 30.0) -> None:
    """Wait until wall time `until`, printing the ingest rate, queue and RSS every `every_s`."""
    prev = None
    while time.time() < until:
        time.sleep(min(every_s, max(0.0, until - time.time())))
        s = sampler.samples[-1] if sampler.samples else None
        if s is None or not s.get("ingest"):
            continue
        phase = "before" if s["t"] < t_burst else "burst" if s["t"] < t_end else "after"
        rate = "" if prev is None else \
            f"{(s['ingest']['accepted'] - prev['ingest']['accepted']) / (s['t'] - prev['t']):6.0f}/s"
        gw_mb = sum(v for k, v in s["rss_kb"].items() if k.startswith("gateway")) / 1024
        log(f"  t{s['t'] - t_burst:+5.0f} s {phase:6s} accepted {s['ingest']['accepted']:8d} {rate}  "
            f"queue {s['ingest']['queue_depth']:5d}  batch p50 {s['ingest']['batch_latency_ms_p50']} ms  "
            f"gateway RSS {gw_mb:.0f} MB  mosquitto {s['rss_kb'].get('mosquitto', 0) / 1024:.0f} MB")
        prev = s


def _print(r: dict) -> None:
    s, lag, rss, rates = r["store"], r["lag"], r["rss"], r["rates"]
    log(f"  rates: before {rates['before_burst_s']}/s, during {rates['during_burst_s']}/s "
        f"(x{rates['achieved_factor']}), after {rates['after_burst_s']}/s; generator {rates['generator_s']}/s, "
        f"at most {rates['generator_behind_max_s']} s behind its schedule")
    log(f"  lost: {s['lost']} (meters {s['meters']['missing']} of {s['meters']['readings']}, generator "
        f"{s['generator']['missing']} of {s['generator']['readings']}, probes {s['probes']['missing']} of "
        f"{s['probes']['readings']}); registers unequal to ground truth: {s['meters']['litres_wrong']}")
    log(f"  lag (publish -> persistence ack): before p50 {lag['before']['p50_ms']} / p99 {lag['before']['p99_ms']} ms;"
        f" during p50 {lag['during']['p50_ms']} / p99 {lag['during']['p99_ms']} / max {lag['during']['max_ms']} ms"
        f" (x{lag['peak_ratio_vs_before_p99']} of before p99); back within {lag['normal_max_ms']} ms "
        f"{lag['recovery_s']} s after the burst (goal {RECOVERY_GOAL_S:.0f} s)")
    for p in lag["series"]:
        log(f"    lag t{p['t_s']:+5d} s  p50 {p['p50_ms']:7.1f} ms  max {p['max_ms']:7.1f} ms  ({p['n']} probes)")
    g, m = rss["gateway_mb"], rss["mosquitto_mb"]
    log(f"  RSS gateway (all processes): before burst {g['before_burst']} MB, end of burst {g['end_of_burst']} MB "
        f"(x{rss['gateway_growth_in_burst']}; bound {rss['gateway_bound_mb']} MB), end {g['end']} MB, "
        f"max {g['max']} MB; store file {rss['store_file_mb']} MiB; mosquitto "
        f"{m['before_burst']} -> {m['end_of_burst']} MB, max {m['max']} MB")
    for p in rss["series"]:
        log("    rss t%+5d s  " % p["t_s"] + "  ".join(f"{k[:-3]} {v}" for k, v in p.items() if k.endswith("_mb")))
    log(f"  CPU during the burst (% of one core): {rss['cpu_percent_during_burst']}")


def row(r: dict) -> list[str]:
    s, lag, rss, rates = r["store"], r["lag"], r["rss"], r["rates"]
    g = rss["gateway_mb"]
    return [
        f"| load: {r['meters']} emulated meters (own connections) at {rates['before_burst_s']} readings/s, burst "
        f"x{r['factor']:g} for {r['burst_s']:.0f} s | {rates['during_burst_s']} readings/s in the burst, lost "
        f"{s['lost']} of {s['meters']['readings'] + s['generator']['readings'] + s['probes']['readings']} | "
        f"before the burst {rates['before_burst_s']}/s | x{rates['achieved_factor']} | x{r['factor']:g}, lost 0 |",
        f"| load: ingest lag (publish -> persistence ack) | peak {lag['during']['max_ms']} ms, back within "
        f"{lag['normal_max_ms']} ms {lag['recovery_s']} s after | before p99 {lag['before']['p99_ms']} ms | "
        f"x{lag['peak_ratio_vs_before_p99']} | recovery <= {RECOVERY_GOAL_S:.0f} s |",
        f"| load: gateway RSS (core + receiver), Mosquitto | {g['end_of_burst']} MB at the burst's end, max "
        f"{g['max']} MB; Mosquitto max {rss['mosquitto_mb']['max']} MB | {g['before_burst']} MB before it | "
        f"{rss['gateway_growth_in_burst']} | <= {rss['gateway_bound_mb']} MB (+ SQLite cache + new meters) |",
    ]


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "generator":
        _, _, port, n, rate, t_start, burst, out = sys.argv
        generator(int(port), int(n), float(rate), float(t_start), float(burst), Path(out))
    elif len(sys.argv) == 6 and sys.argv[1] == "probe":
        _, _, port, n, every, out = sys.argv
        probe(int(port), int(n), float(every), Path(out))
    else:
        sys.path.insert(0, str(ROOT / "backend"))
        import argparse
        ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("--meters", type=int, default=2000)
        ap.add_argument("--interval-s", type=int, default=5)
        ap.add_argument("--factor", type=float, default=5.0)
        ap.add_argument("--burst-s", type=float, default=300)
        ap.add_argument("--pre-s", type=float, default=60)
        ap.add_argument("--post-s", type=float, default=120)
        ap.add_argument("--workdir", default="/tmp/aquafog-load-bench")
        a = ap.parse_args()
        r = measure(Path(a.workdir), a.meters, a.interval_s, a.factor, a.burst_s, a.pre_s, a.post_s)
        print("\n".join(row(r)))
