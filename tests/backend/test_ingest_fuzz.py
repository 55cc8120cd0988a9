"""Hostile input (issue 6): hypothesis-generated topics and payloads fed through the real
single writer into a real SQLite store. Nothing a meter (or anything on the broker) sends
may stop the writer, go uncounted, or leave a bad row behind (docs/http-api.md "Bad input").

Two levels:
- the pure decoder: protocol.decode never raises, on any topic and any bytes, and
  answers a decoded message, None (an empty status) or a Reject naming a known reason;
- the writer: >= 10,000 generated messages in batches (the same machinery as
  test_writer.py: a real store, the real Writer thread, fakes for the two MQTT
  connections); after each batch a known-good reading must still be stored, the ingest
  counters must account for every message, and at the end the store must hold its
  invariants (registered meters only, values in range, registers never backwards within
  a boot, consumption equal to the sum of the segments, no row a reject could explain).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from aquafog import protocol
from aquafog.config import GatewayConfig
from aquafog.gateway.writer import Writer
from aquafog.periods import Calendar
from aquafog.protocol import (
    MAX_REGISTER, MAX_SEQ, Health, Limits, Reading, Reject, Status, Topics, ValveResult, decode,
)
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters
from aquafog.store.schema import (
    consumption_daily, consumption_monthly, ingest_counters, meter_boots, meters, readings,
)

NOW = int(time.time())
REGISTERED = ("m1", "m2", "m-3_x")
CANARY = "canary"
UNREGISTERED = ("m4", "zz9", "a" * 32)
REJECT_REASONS = {
    "topic_shape", "bad_meter_id", "payload_too_large", "not_json", "not_object", "missing_field",
    "unsupported_version", "wrong_type", "not_finite", "out_of_range", "bad_format", "invalid_value",
    "ts_future", "ts_too_old",
}
FIELDS = {"v", "boot", "seq", "ts", "pulses", "litres", "flow", "valve", "fw", "uptime_s", "reset", "rssi",
          "heap_free", "dropped", "buffer", "clock", "alarms", "online", "id", "state", "ok", "error", "cause"}
# what the writer may add on top of the decoder's rejects (after decoding, per message kind)
READING_OUTCOMES = {("accepted", ""), ("duplicate", ""), ("late", ""), ("register_backwards", "litres"),
                    ("register_backwards", "pulses"), ("conflicting_duplicate", "")}
LEDGER_REJECTS = {("unknown_command", "id"), ("conflicting_duplicate", "id"), ("bad_format", "id")}


# ---------------------------------------------------------------- strategies

def _nested(depth: int):
    obj: object = 1
    for i in range(depth):
        obj = [obj] if i % 2 else {"a": obj}
    return obj


WEIRD = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, MAX_SEQ, MAX_SEQ + 1, MAX_REGISTER, MAX_REGISTER + 1, 2**63, -(2**63), 2**64,
                     10**30, NOW, NOW + 10**6, 1577836799]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 0.0005, 1.2345, 5e-324]),
    st.text(max_size=40), st.sampled_from(["", "open", "closed", "ajar", "aaaaaaaa", "AAAAAAAA", "1",
                                           "\x00", "é", "\ud7ff", "leak", "burst", "local-aaaaaaaa-1"]),
    st.lists(st.integers(), max_size=3), st.lists(st.text(max_size=5), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.integers(min_value=2, max_value=3000).map(_nested),
)

# numbers aimed at the numeric fields: edges, overflow on scaling (x * 1000), non-finite
EDGES = st.sampled_from([-1, -0.0004, 0.0004, 1.0005, 1e16, 1e300, 1e308, -1e308, 1.7976931348623157e308,
                     float("nan"), float("inf"), float("-inf"), MAX_REGISTER / 1000, MAX_REGISTER // 1000 + 1,
                     2**53, 2**53 + 1, 2**31, -(2**31), 10**400])
# (one_of draws its branch like any integer, favouring the ends: pick the edges most of the time)
NUMBERS = st.integers(0, 9).flatmap(
    lambda i: st.floats() if i == 0 else st.integers(-(2**64), 2**64) if i == 9 else EDGES)
NUMERIC_FIELDS = ["seq", "ts", "pulses", "litres", "flow", "uptime_s", "rssi", "heap_free", "dropped", "buffer", "v"]

BOOTS = st.sampled_from(["aaaaaaaa", "bbbbbbbb", "0000ffff"])


@st.composite
def reading_obj(draw):
    ml = draw(st.integers(0, 40)) * draw(st.sampled_from([1, 1, 1, 1000, 123457]))
    return {"v": 1, "boot": draw(BOOTS), "seq": draw(st.integers(0, 30)),
            "ts": draw(st.one_of(st.integers(NOW - 400 * 86400, NOW - 1000), st.just(NOW - 86400 * 31))),
            "pulses": draw(st.one_of(st.just(ml), st.integers(0, 50))),
            "litres": draw(st.sampled_from([ml / 1000] * 4 + [ml // 1000, ml / 1000 + 0.0004])),
            "flow": draw(st.sampled_from([0, 0.5, 1.25, 999.999, 1000])), "valve": draw(st.sampled_from(["open", "closed"]))}


@st.composite
def health_obj(draw):
    return {"v": 1, "boot": draw(BOOTS), "fw": "0.2.0", "uptime_s": draw(st.integers(0, 10**6)),
            "reset": draw(st.sampled_from(protocol.RESET_CAUSES)), "rssi": draw(st.one_of(st.none(), st.integers(-127, 0))),
            "heap_free": 90000, "dropped": draw(st.integers(0, 5)), "buffer": 0,
            "clock": draw(st.sampled_from(protocol.CLOCK_STATES)),
            "alarms": draw(st.lists(st.sampled_from(protocol.ALARMS), unique=True))}


@st.composite
def status_obj(draw):
    if draw(st.booleans()):
        return {"v": 1, "online": True, "boot": draw(BOOTS), "fw": "0.1.0", "valve": draw(st.sampled_from(["open", "closed"]))}
    return {"v": 1, "online": False, "boot": draw(BOOTS)}


@st.composite
def valve_obj(draw):
    cid = draw(st.one_of(st.sampled_from(["local-aaaaaaaa-1", "local-bbbbbbbb-2", "local-aaaaaaaa-0", "c-1", "op:1"]),
                         st.from_regex(protocol.COMMAND_ID_RE, fullmatch=True)))
    d = {"v": 1, "id": cid, "state": draw(st.sampled_from(["open", "closed"])), "ok": draw(st.booleans())}
    if draw(st.booleans()):
        d["cause"] = "burst"
    if not d["ok"] and draw(st.booleans()):
        d["error"] = draw(st.text(max_size=300))
    return d


KIND_OBJ = {"tele/reading": reading_obj(), "tele/health": health_obj(), "status": status_obj(),
            "stat/valve": valve_obj()}


def _dumps(obj, ascii: bool) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=ascii).encode("utf-8", "surrogatepass")
    except RecursionError:  # too deep for the encoder: the same, by hand
        return b'{"v":1,"deep":' + b"[" * 5000 + b"]" * 5000 + b"}"


@st.composite
def mutated(draw, obj):
    """A valid payload object, then zero or more mutations: a field set to anything, a field
    removed, extra fields; serialised (NaN/Infinity included), or replaced by raw bytes."""
    obj = dict(obj)
    if draw(st.integers(0, 9)) in (4, 5):  # one numeric field made hostile, the rest valid
        obj[draw(st.sampled_from([k for k in NUMERIC_FIELDS if k in obj and k != "v"] or ["v"]))] = draw(NUMBERS)
        return _dumps(obj, True)
    for _ in range(draw(st.integers(1, 3)) if draw(st.integers(0, 9)) < 6 else 0):
        op = draw(st.integers(0, 4))
        keys = sorted(obj)
        if op >= 3:
            num = [k for k in NUMERIC_FIELDS if k in obj]
            if num:
                obj[draw(st.sampled_from(num))] = draw(NUMBERS)
        elif op == 0 and keys:
            obj[draw(st.sampled_from(keys))] = draw(WEIRD)
        elif op == 1 and keys:
            obj.pop(draw(st.sampled_from(keys)))
        else:
            obj[draw(st.text(max_size=8))] = draw(WEIRD)
    form = draw(st.integers(0, 19)) - 7  # 0 and the bounds are favoured: the valid case is the middle
    raw = _dumps(obj, draw(st.booleans()))
    if form == 0:
        return draw(st.binary(max_size=64))
    if form == 1:
        return raw[: draw(st.integers(0, len(raw)))]  # truncated
    if form == 7:
        return draw(st.binary(min_size=1, max_size=64)) + raw  # junk before it
    if form == 2:
        return raw + b" " * draw(st.sampled_from([8192, 9000, 100_000]))  # oversize
    if form == 3:
        return _dumps([obj] if draw(st.booleans()) else draw(WEIRD), True)  # not an object
    if form == 4:
        return raw.replace(b'"v": 1', draw(st.sampled_from([b'"v": 2', b'"v": 1.0', b'"v": true', b'"v": "1"'])))
    if form == 5:
        return b'{"v":1,"x":' + b"[" * draw(st.integers(900, 100_000)) + b"}"
    if form == 6:
        return b""
    return raw


GOOD_METER = st.sampled_from(REGISTERED * 4 + UNREGISTERED)
BAD_METER = st.one_of(st.sampled_from(["", "M1", "m 1", "-m1", "m1!", "mé", "a" * 33, "+", "#", "m1\x00"]),
                  st.text(max_size=12))
METER = st.integers(0, 9).flatmap(lambda i: BAD_METER if i in (3, 6) else GOOD_METER)
KIND = st.sampled_from(list(KIND_OBJ))


@st.composite
def message(draw):
    meter, kind = draw(METER), draw(KIND)
    payload = draw(mutated(draw(KIND_OBJ[kind])))
    shape = draw(st.integers(0, 19)) - 8  # 0..3 are the bad shapes
    topic = f"aquafog/{meter}/{kind}"
    if shape == 0:
        topic = draw(st.sampled_from(["aquafg", "Aquafog", "", "aquafog/aquafog", "/aquafog", "+", "#"])) + \
            f"/{meter}/{kind}"
    elif shape == 1:
        topic += "/" + draw(st.text(max_size=6))  # an extra level
    elif shape == 2:
        topic = draw(st.sampled_from(["aquafog/+/tele/reading", "aquafog/#", "aquafog/m1/tele/#", "aquafog/m1/+",
                                      "aquafog//tele/reading", "aquafog/m1//reading", "aquafog/m1/tele/",
                                      "aquafog/m1", "aquafog/", "aquafog/m1/tele/gossip", "aquafog/m1/cmnd/valve",
                                      "aquafog/m1/cmnd/ack", "aquafog/m1/status/", "aquafog/m1/tele/reading\x00"]))
    elif shape == 3:
        topic = draw(st.text(max_size=40))
    return topic, payload


BATCH = st.lists(message(), min_size=100, max_size=100)


# ---------------------------------------------------------------- the decoder alone

def _check_decoded(d):
    assert d is None or type(d) in (Reading, Health, Status, ValveResult, Reject), d
    if type(d) is Reject:
        assert d.reason in REJECT_REASONS, d
        assert d.field is None or d.field in FIELDS, d
        assert isinstance(d.message, str) and d.message
    elif type(d) is Reading:
        assert 0 <= d.seq <= MAX_SEQ and 0 <= d.pulses <= MAX_REGISTER and 0 <= d.ml <= MAX_REGISTER
        assert 0 <= d.flow_mlpm <= 1000 * 1000 and d.valve in protocol.VALVE_STATES
        assert protocol.BOOT_RE.fullmatch(d.boot) and d.ts >= Limits().min_valid_ts


@settings(max_examples=6000, deadline=None, suppress_health_check=list(HealthCheck))
@given(topic=st.one_of(st.text(max_size=60), message().map(lambda m: m[0])),
       payload=st.one_of(st.binary(max_size=200), message().map(lambda m: m[1])))
def test_decode_never_raises_on_any_topic_and_bytes(topic, payload):
    _check_decoded(decode(Topics(), topic, payload, time.time(), Limits()))


@settings(max_examples=6000, deadline=None, suppress_health_check=list(HealthCheck))
@given(message())
def test_decode_never_raises_on_mutated_messages(m):
    _check_decoded(decode(Topics(), m[0], m[1], time.time(), Limits()))


# ---------------------------------------------------------------- through the writer

class FakePublisher:
    def __init__(self, events: queue.Queue):
        self.events, self.mid = events, 0

    def publish(self, topic, payload, qos=1):
        self.mid += 1
        self.events.put(("published", self.mid))
        return self.mid


class FakeAckPipe:
    def __init__(self):
        self.acked = 0
        self.cond = threading.Condition()

    def send(self, item):
        with self.cond:
            self.acked += len(item[2])
            self.cond.notify_all()

    def wait(self, n, timeout=30.0):
        with self.cond:
            assert self.cond.wait_for(lambda: self.acked >= n, timeout), (self.acked, n)


def _counters(engine) -> Counter:
    with engine.connect() as conn:
        return Counter({(r.reason, r.field): r.count for r in conn.execute(select(ingest_counters))})


def test_fuzzed_ingest_through_the_real_writer(tmp_path):
    cfg = GatewayConfig(db_path=str(tmp_path / "gw.db"), batch_max_delay_ms=5)
    engine = open_engine(cfg.db_path)
    add_meters(engine, [*REGISTERED, CANARY])
    events: queue.Queue = queue.Queue()
    pipe = FakeAckPipe()
    writer = Writer(cfg, engine, events, FakePublisher(events), pipe)
    writer.start()
    topics, limits = Topics(cfg.topic_root), cfg.limits
    sent: list[tuple[str, bytes]] = []
    state = {"mid": 0, "canary": 0}
    expected = Counter()          # (reason, field) the decoder alone decides
    readings_in = 0               # decoded readings of registered meters
    valves_in = 0                 # decoded valve results of registered meters
    candidates: dict[tuple, set] = defaultdict(set)  # (meter, boot, seq) -> stored values it may have

    def deliver(msgs):
        batch = []
        for topic, payload in msgs:
            state["mid"] += 1
            batch.append((1, state["mid"], 1, topic, payload, int(time.time() * 1000)))
        writer.deliver(("msgs", batch))
        pipe.wait(state["mid"])
        writer.call(lambda conn: (None, []))

    @settings(max_examples=110, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(BATCH)
    def feed(batch):
        nonlocal readings_in, valves_in
        now = time.time()
        for topic, payload in batch:
            d = decode(topics, topic, payload, now, limits)
            if type(d) is Reject:
                expected[(d.reason, d.field or "")] += 1
            elif d is not None and d.meter not in REGISTERED:
                expected[("unknown_meter", "")] += 1
            elif type(d) is Reading:
                readings_in += 1
                candidates[(d.meter, d.boot, d.seq)].add((d.ts, d.pulses, d.ml, d.flow_mlpm, d.valve))
            elif type(d) is ValveResult:
                valves_in += 1
        sent.extend(batch)
        before = writer.stats.accepted
        # the known-good reading rides after the batch: the writer must still take and store it
        c = state["canary"]
        state["canary"] += 1
        canary = json.dumps({"v": 1, "boot": "cccccccc", "seq": c, "ts": NOW - 100, "pulses": c, "litres": c / 1000,
                             "flow": 0, "valve": "open"}).encode()
        deliver([*batch, (topics.reading(CANARY), canary)])
        assert writer.is_alive() and writer.fatal is None
        assert writer.stats.accepted > before
        with engine.connect() as conn:
            assert conn.execute(text(
                "select count(*) from readings r join meters m on m.pk = r.meter_pk "
                "where m.meter = :m and r.seq = :s"), {"m": CANARY, "s": c}).scalar() == 1

    try:
        t0 = time.monotonic()
        feed()
        elapsed = time.monotonic() - t0
        assert len(sent) >= 10_000, len(sent)
        print(f"\n{len(sent)} fuzzed messages (+{state['canary']} canaries) through the writer in {elapsed:.1f} s")

        # every message is accounted for: the decoder's rejects exactly, the rest by outcome
        got = _counters(engine)
        got[("accepted", "")] -= state["canary"]
        assert ("internal_error", "") not in got, got
        for key, n in expected.items():
            if key in LEDGER_REJECTS:
                assert got[key] >= n, (key, got[key], n)
            else:
                assert got[key] == n, (key, got[key], n)
        rest = got - expected
        assert set(rest) <= READING_OUTCOMES | LEDGER_REJECTS | {("register_reset", "")}, rest
        reading_outcomes = sum(n for k, n in rest.items() if k in READING_OUTCOMES)
        assert reading_outcomes == readings_in, (reading_outcomes, readings_in, rest)
        assert sum(n for k, n in rest.items() if k in LEDGER_REJECTS) <= valves_in
        assert rest[("register_reset", "")] <= rest[("accepted", "")]
        assert writer.stats.rejected == sum(n for k, n in got.items() if k[0] not in
                                            ("accepted", "duplicate", "late", "register_reset"))

        _check_store(engine, cfg, candidates)
    finally:
        writer.stop()
        engine.dispose()


def _check_store(engine, cfg, candidates) -> None:
    cal = Calendar(cfg.timezone)
    limits: Limits = cfg.limits
    with engine.connect() as conn:
        names = {r.pk: r.meter for r in conn.execute(select(meters.c.pk, meters.c.meter))}
        assert set(names.values()) == {*REGISTERED, CANARY}
        boots = {(r.meter_pk, r.boot_idx): r.boot for r in conn.execute(select(meter_boots))}
        rows = conn.execute(select(readings).order_by(readings.c.meter_pk, readings.c.boot_idx, readings.c.seq)).all()
        daily = {(r.meter, r.day): r.ml for r in conn.execute(select(consumption_daily)) if r.ml}
        monthly = {(r.meter, r.month): r.ml for r in conn.execute(select(consumption_monthly)) if r.ml}
        totals = {r.meter: r.total_ml for r in conn.execute(select(meters.c.meter, meters.c.total_ml))}
        counts = {r.meter: r.readings for r in conn.execute(select(meters.c.meter, meters.c.readings))}
    assert len(rows) > 100  # the fuzz did reach the store
    want_daily, want_monthly, want_total, n = Counter(), Counter(), Counter(), Counter()
    prev = None
    for r in rows:
        meter = names[r.meter_pk]  # a registered meter
        boot = boots[(r.meter_pk, r.boot_idx)]
        assert 0 <= r.seq <= MAX_SEQ
        assert 0 <= r.ml <= MAX_REGISTER and 0 <= r.pulses <= MAX_REGISTER
        assert 0 <= r.flow_mlpm <= limits.max_flow_lpm * 1000 and r.valve in protocol.VALVE_STATES
        assert limits.min_valid_ts <= r.ts <= NOW + 3600 and r.rx_ms > 0
        if meter != CANARY:  # a row some decoded reading of a registered meter carried, values and all
            assert (r.ts, r.pulses, r.ml, r.flow_mlpm, r.valve) in candidates[(meter, boot, r.seq)], r
        seg = 0
        if prev is not None and prev.meter_pk == r.meter_pk:
            if prev.boot_idx == r.boot_idx:  # within a boot the register never goes backwards
                assert r.ml >= prev.ml and r.pulses >= prev.pulses, (prev, r)
            seg = max(0, r.ml - prev.ml)
        day, month = cal.keys(r.ts)
        want_daily[(meter, day)] += seg
        want_monthly[(meter, month)] += seg
        want_total[meter] += seg
        n[meter] += 1
        prev = r
    assert daily == {k: v for k, v in want_daily.items() if v}
    assert monthly == {k: v for k, v in want_monthly.items() if v}
    assert {m: t for m, t in totals.items() if t} == {m: t for m, t in want_total.items() if t}
    assert {m: c for m, c in counts.items() if c} == dict(n)


def test_a_float_too_large_to_scale_is_out_of_range_not_a_crash():
    """Found by the fuzz above: 1e308 litres made x * 1000 overflow to inf and round() raise,
    so the reading's batch was replayed and the message counted as internal_error."""
    for key in ("litres", "flow"):
        for x in (1e308, -1e308, 1.7976931348623157e308):
            body = {"v": 1, "boot": "aaaaaaaa", "seq": 1, "ts": NOW - 60, "pulses": 1, "litres": 0.001, "flow": 0,
                    "valve": "open", key: x}
            d = decode(Topics(), "aquafog/m1/tele/reading", json.dumps(body).encode(), time.time(), Limits())
            assert d == Reject("out_of_range", key, d.message), d
