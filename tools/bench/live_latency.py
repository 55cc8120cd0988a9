"""live: from a meter's publish to the server-sent event a dashboard receives (issue 5:
p99 <= 200 ms on loopback), with real parts only.

Set-up: a Mosquitto and an `aquafog gateway` process with the default settings
(batch_max_delay_ms 250 ...), `background` other registered meters publishing valid
readings (QoS 1) at `rate` readings/s in total from a separate process, so the gateway
commits batches of other meters' readings all the time, as a fog does.

One sample: meter live0000 publishes a reading (QoS 1 on aquafog/live0000/tele/reading,
the meters' protocol); the time runs from just before the publish to the moment the
client reading GET /api/v1/meters/live0000/live over HTTP on loopback has parsed its
`reading` event (matched by seq). The reference, in the same run: the same publish to a
bare paho subscriber of that topic on the same broker (the floor: broker delivery and a
Python client). Between samples a random pause of up to `max_pause_ms`, so readings
arrive at a random phase of the gateway's batches and commits.

    live_latency.py background PORT METERS RATE   # the background load (run by measure())
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from figures import log, stats

GOAL_MS = 200.0
TARGET = "live0000"





def reading(seq: int, ml: int, ts: int) -> bytes:
    return ('{"v":1,"boot":"0badc0de","seq":%d,"ts":%d,"pulses":%d,"litres":%d.%03d,"flow":2.500,"valve":"open"}'
            % (seq, ts, ml, ml // 1000, ml % 1000)).encode()


def background(port: int, meters: int, rate: float) -> None:
    """Publish valid readings of meters bg00000... round robin at `rate` per second until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-live-background")
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    seq = [0] * meters
    t0 = time.monotonic()
    i = 0
    while not stop.is_set():
        m = i % meters
        s = seq[m]
        seq[m] += 1
        c.publish(f"aquafog/bg{m:05d}/tele/reading", reading(s, s * 250, int(time.time())), qos=1)
        i += 1
        ahead = t0 + i / rate - time.monotonic()
        if ahead > 0:
            stop.wait(ahead)
    c.disconnect()
    c.loop_stop()


class EventStream(threading.Thread):
    """Reads the meter's live stream; notes when each reading event (by seq) was parsed."""

    def __init__(self, port: int, path: str, headers: dict, got: dict, cond: threading.Condition):
        super().__init__(name="sse", daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **headers})
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {self.resp.status} {self.resp.read()[:200]!r}")
        self.got, self.cond = got, cond
        self.other = 0

    def run(self) -> None:
        event = None
        try:
            for line in self.resp:
                if line.startswith(b"event: "):
                    event = line[7:].strip()
                elif line.startswith(b"data: "):
                    t = time.perf_counter()
                    if event == b"reading":
                        seq = json.loads(line[6:])["seq"]
                        with self.cond:
                            self.got.setdefault(seq, t)
                            self.cond.notify_all()
                    else:
                        self.other += 1  # a `missed` notice would show up here
        except (OSError, ValueError):
            pass  # closed at the end

    def close(self) -> None:
        self.sock.close()


def measure(workdir: Path, samples: int = 300, meters: int = 300, rate: float = 300.0,
            max_pause_ms: float = 250.0) -> dict:
    from aquafog.broker import LocalBroker
    from aquafog.gateway.local import LocalGateway

    workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(workdir / "broker").start()
    bg = gw = stream = None
    clients = []
    try:
        gw = LocalGateway(workdir, broker.port, db_path=str(workdir / "live.db"), mqtt_client_id="bench-live",
                          log_level="WARNING")
        gw.register([TARGET] + [f"bg{m:05d}" for m in range(meters)])
        gw.start()
        headers = {"Authorization": f"Bearer {gw.token()}"} if hasattr(gw, "token") else {}
        bg = subprocess.Popen([sys.executable, __file__, "background", str(broker.port), str(meters), str(rate)])

        def accepted() -> int:
            c = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=10)
            c.request("GET", "/api/v1/health", headers=headers)
            return json.loads(c.getresponse().read())["ingest"]["accepted"]
        deadline = time.monotonic() + 30
        while accepted() < rate:  # the background load is flowing through the gateway
            if time.monotonic() > deadline or bg.poll() is not None:
                raise RuntimeError("the background load does not reach the gateway")
            time.sleep(0.1)

        cond = threading.Condition()
        got_sse: dict[int, float] = {}
        got_ref: dict[int, float] = {}

        def on_ref(_c, _u, msg) -> None:
            t = time.perf_counter()
            seq = json.loads(msg.payload)["seq"]
            with cond:
                got_ref.setdefault(seq, t)
                cond.notify_all()
        ref = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-live-ref")
        subscribed = threading.Event()
        ref.on_message = on_ref
        ref.on_subscribe = lambda *_: subscribed.set()
        ref.connect("127.0.0.1", broker.port)
        ref.loop_start()
        ref.subscribe(f"aquafog/{TARGET}/tele/reading", qos=1)
        clients.append(ref)
        if not subscribed.wait(10):
            raise RuntimeError("the reference subscriber did not subscribe")
        stream = EventStream(gw.http_port, f"/api/v1/meters/{TARGET}/live", headers, got_sse, cond)
        stream.start()

        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-live-meter")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        clients.append(pub)
        rng = random.Random(5)
        sent: dict[int, float] = {}
        lost = 0
        accepted0, t_load0 = accepted(), time.monotonic()
        log(f"live: {samples} readings of {TARGET} -> its SSE stream, {meters} other meters at {rate:.0f} "
            f"readings/s ...")
        for seq in range(samples):
            payload = reading(seq, seq * 1000, int(time.time()))
            sent[seq] = time.perf_counter()
            pub.publish(f"aquafog/{TARGET}/tele/reading", payload, qos=1)
            with cond:
                if not cond.wait_for(lambda: seq in got_sse and seq in got_ref, 5.0):
                    lost += 1
            time.sleep(rng.uniform(0, max_pause_ms) / 1000)  # a random phase, not synchronisation
        load_rate = (accepted() - accepted0) / (time.monotonic() - t_load0)
        sse = [(got_sse[s] - t) * 1000 for s, t in sent.items() if s in got_sse]
        mref = [(got_ref[s] - t) * 1000 for s, t in sent.items() if s in got_ref]
        if not sse or not mref:
            raise RuntimeError(f"no samples: {len(sse)} events, {len(mref)} reference deliveries")
        r = {"samples": samples, "background_meters": meters, "background_rate": rate,
             "background_accepted_per_s": round(load_rate), "lost": lost, "missed_notices": stream.other,
             "sse": stats(sse), "mqtt_ref": stats(mref), "goal_p99_ms": GOAL_MS,
             "reading_events_at": "arrival"}
        r["p99_ratio_vs_ref"] = round(r["sse"]["p99_ms"] / r["mqtt_ref"]["p99_ms"], 2)
        r["p99_ratio_vs_goal"] = round(r["sse"]["p99_ms"] / GOAL_MS, 2)
        log(f"  publish -> SSE event       p50 {r['sse']['p50_ms']:7.1f} ms  p99 {r['sse']['p99_ms']:7.1f} ms  "
            f"max {r['sse']['max_ms']:7.1f} ms  ({len(sse)} samples, {lost} late > 5 s)")
        log(f"  publish -> bare paho sub   p50 {r['mqtt_ref']['p50_ms']:7.1f} ms  p99 {r['mqtt_ref']['p99_ms']:7.1f} ms  "
            f"max {r['mqtt_ref']['max_ms']:7.1f} ms")
        log(f"  background ingest {load_rate:.0f} readings/s accepted meanwhile")
        return r
    finally:
        if stream is not None:
            stream.close()
        for c in clients:
            c.disconnect()
            c.loop_stop()
        if bg is not None:
            bg.terminate()
            bg.wait(10)
        if gw is not None:
            gw.stop()
        broker.stop()


def row(r: dict) -> str:
    return (f"| live, meter publish -> SSE reading event on loopback, QoS 1, {r['background_meters']} other meters at "
            f"{r['background_accepted_per_s']} readings/s, {r['samples']} samples | p50 {r['sse']['p50_ms']} / "
            f"p99 {r['sse']['p99_ms']} / max {r['sse']['max_ms']} ms | same publish -> bare paho subscriber "
            f"p99 {r['mqtt_ref']['p99_ms']} ms | {r['p99_ratio_vs_ref']} | p99 <= 200 ms "
            f"(p99/goal {r['p99_ratio_vs_goal']:.2f}) |")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "background":
        background(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend"))
        print(json.dumps(measure(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/aquafog-live-bench")),
                         indent=2))
