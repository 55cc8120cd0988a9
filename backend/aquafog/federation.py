"""Fog -> cloud partials: what a fog sends up, and how the cloud merges them.

A fog never sends readings up. Per period (the current day and month, in the utility's
time zone, which every fog and the cloud share) it publishes one partial:

    {"v":1,"region":"north","period":"day","key":"2026-11-26","seq":17,"ts_ms":1795650000000,
     "meters":1000,"sum_ml":123456789,"k":1000,"top":[["m0042",912000],["m0007",880500],...]}

- `meters`: meters registered at the fog (every one counts in the mean, even at 0 L);
- `sum_ml`: the period's consumption of all of them, in millilitres (exact integers);
- `top`: the fog's top-k meters by consumption, ordered by ml descending then meter id
  ascending (the order every ranking in AquaFog uses), fewer when the fog has fewer
  meters with consumption in the period;
- `seq`: grows with every partial a fog publishes (a restart continues from ts_ms), so
  a late or duplicated partial never replaces a newer one.

Exactness. The city's top-n for n <= min(k) is the top-n of the union of the fogs'
lists: a meter in the city's top-n is in its own fog's top-n (fewer meters of its fog
can precede it), hence in that fog's top-k. The mean is sum(sum_ml) / sum(meters).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import chain
from typing import Iterable

from .bridge import REGION_RE
from .policy import MODES, PolicySettings, parse_settings
from .protocol import COMMAND_ID_RE, LOCAL_PREFIX, Reject
from .protocol import METER_ID_RE as METER_RE

WIRE_VERSION = 1
PERIODS = ("day", "month")
_KEY_RE = {"day": re.compile(r"\d{4}-\d{2}-\d{2}"), "month": re.compile(r"\d{4}-\d{2}")}
MAX_K = 100_000
MAX_ML = 2**63 - 1
MAX_PARTIAL_BYTES = 8 * 1024 * 1024  # a top-100k list is ~3 MB


@dataclass(frozen=True)
class Partial:
    region: str
    period: str
    key: str
    seq: int
    ts_ms: int
    meters: int
    sum_ml: int
    k: int
    top: tuple[tuple[str, int], ...]

    @property
    def complete(self) -> bool:
        """The list holds every meter of the fog with consumption (fewer than k)."""
        return len(self.top) < self.k


def period_key(period: str, day_key: int) -> str:
    """'2026-11-26' (day) or '2026-11' (month) from a YYYYMMDD integer."""
    y, m, d = day_key // 10000, day_key // 100 % 100, day_key % 100
    return f"{y:04d}-{m:02d}-{d:02d}" if period == "day" else f"{y:04d}-{m:02d}"


def encode_partial(p: Partial) -> bytes:
    top = ",".join('["%s",%d]' % (m, ml) for m, ml in p.top)
    return ('{"v":1,"region":"%s","period":"%s","key":"%s","seq":%d,"ts_ms":%d,"meters":%d,"sum_ml":%d,'
            '"k":%d,"top":[%s]}' % (p.region, p.period, p.key, p.seq, p.ts_ms, p.meters, p.sum_ml, p.k,
                                    top)).encode()


def _rej(reason: str, fld: str, detail: str) -> Reject:
    return Reject(reason, fld, detail)


def _count(obj: dict, key: str, hi: int) -> int | Reject:
    v = obj.get(key)
    if type(v) is not int or not 0 <= v <= hi:
        return _rej("bad_field", key, f"{key} must be an integer 0..{hi}, got {v!r}"[:200])
    return v


def _object(payload: bytes) -> dict | Reject:
    """The payload as a JSON object of wire version 1, or the Reject saying why not."""
    if len(payload) > MAX_PARTIAL_BYTES:
        return _rej("too_large", "", f"{len(payload)} bytes, at most {MAX_PARTIAL_BYTES}")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return _rej("not_json", "", "the payload is not JSON")
    if not isinstance(obj, dict):
        return _rej("not_object", "", "the payload must be a JSON object")
    if obj.get("v") != WIRE_VERSION or type(obj.get("v")) is not int:
        return _rej("unsupported_version", "v", f"v must be {WIRE_VERSION}, got {obj.get('v')!r}"[:200])
    return obj


def _from_fog(payload: bytes, region_from_topic: str) -> dict | Reject:
    """A fog's message: a v1 object that names the region its topic names."""
    obj = _object(payload)
    if isinstance(obj, Reject):
        return obj
    if obj.get("region") != region_from_topic:
        return _rej("region_mismatch", "region", f"region {obj.get('region')!r} on the topic of {region_from_topic!r}")
    return obj


def _counts(obj: dict, limits: tuple[tuple[str, int], ...]) -> dict | Reject:
    """{name: value} for integer fields 0..hi, or the Reject of the first bad one."""
    vals = {}
    for name, hi in limits:
        v = _count(obj, name, hi)
        if isinstance(v, Reject):
            return v
        vals[name] = v
    return vals


def decode_partial(payload: bytes, region_from_topic: str | None = None) -> Partial | Reject:
    """A partial, or a Reject naming the field and the problem (never raises)."""
    obj = _object(payload)
    if isinstance(obj, Reject):
        return obj
    region = obj.get("region")
    if not isinstance(region, str) or not REGION_RE.fullmatch(region):
        return _rej("bad_field", "region", "region must be 1-32 of a-z 0-9 _ - starting with a letter or digit")
    if region_from_topic is not None and region != region_from_topic:
        return _rej("region_mismatch", "region", f"region {region!r} arrived on the topic of {region_from_topic!r}")
    period = obj.get("period")
    if period not in PERIODS:
        return _rej("bad_field", "period", f"period must be one of {', '.join(PERIODS)}")
    key = obj.get("key")
    if not isinstance(key, str) or not _KEY_RE[period].fullmatch(key):
        return _rej("bad_field", "key", f"key must be {'YYYY-MM-DD' if period == 'day' else 'YYYY-MM'}")
    vals = _counts(obj, (("seq", MAX_ML), ("ts_ms", MAX_ML), ("meters", 10**9), ("sum_ml", MAX_ML), ("k", MAX_K)))
    if isinstance(vals, Reject):
        return vals
    if vals["k"] < 1:
        return _rej("bad_field", "k", "k must be at least 1")
    raw = obj.get("top")
    if not isinstance(raw, list) or len(raw) > vals["k"]:
        return _rej("bad_field", "top", f"top must be a list of at most k={vals['k']} [meter, ml] pairs")
    top = []
    prev = None
    for i, item in enumerate(raw):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not METER_RE.fullmatch(item[0]) or type(item[1]) is not int or not 0 <= item[1] <= MAX_ML):
            return _rej("bad_field", "top", f"top[{i}] must be [meter id, ml >= 0]")
        entry = (item[0], item[1])
        if prev is not None and not (-prev[1], prev[0]) < (-entry[1], entry[0]):
            return _rej("bad_field", "top", f"top[{i}] is out of order (ml descending, then meter id ascending)")
        prev = entry
        top.append(entry)
    if sum(ml for _, ml in top) > vals["sum_ml"]:
        return _rej("bad_field", "sum_ml", "sum_ml is smaller than the consumption in top")
    return Partial(region, period, key, vals["seq"], vals["ts_ms"], vals["meters"], vals["sum_ml"], vals["k"],
                   tuple(top))


# --------------------------------------------------------------------------- merging
def as_run(p: Partial) -> list[tuple[int, str, str]]:
    """A fog's top list as sort keys (-ml, meter, region): ascending, as the lists arrive."""
    return [(-ml, meter, p.region) for meter, ml in p.top]


def merge_runs(runs: Iterable[list[tuple[int, str, str]]], n: int) -> list[tuple[str, int, str]]:
    """The top n as (meter, ml, region) of sorted runs (Timsort merges runs it finds sorted)."""
    return [(meter, -neg, region) for neg, meter, region in sorted(chain.from_iterable(runs))[:n]]


def merge_top(partials: Iterable[Partial], n: int) -> list[tuple[str, int, str]]:
    """The city's top n as (meter, ml, region), from the fogs' top lists."""
    return merge_runs((as_run(p) for p in partials), n)


def exact_limit(partials: Iterable[Partial]) -> int:
    """The largest n for which merge_top is exact: the smallest k among fogs whose list
    is cut (a complete list never limits it)."""
    cut = [p.k for p in partials if not p.complete]
    return min(cut) if cut else MAX_K


def city_mean(partials: Iterable[Partial]) -> tuple[int, int]:
    """(sum of ml, number of meters) over the fogs' partials."""
    total = count = 0
    for p in partials:
        total += p.sum_ml
        count += p.meters
    return total, count


# --------------------------------------------------------------------------- directory
# A fog's registered meters, in chunks (a retained message each), so the cloud knows which
# fog owns which meter: aquafog-fog/summary/directory/<chunk>. A new `seq` replaces the
# whole set once all its chunks are in.
DIRECTORY_CHUNK = 10_000
STATUSES = ("queued", "sent", "applied", "failed", "expired", "rejected")


@dataclass(frozen=True)
class DirectoryChunk:
    region: str
    seq: int
    chunk: int
    chunks: int
    meters: tuple[str, ...]


def encode_directory(d: DirectoryChunk) -> bytes:
    return json.dumps({"v": 1, "region": d.region, "seq": d.seq, "chunk": d.chunk, "chunks": d.chunks,
                       "meters": list(d.meters)}, separators=(",", ":")).encode()


def decode_directory(payload: bytes, region_from_topic: str) -> DirectoryChunk | Reject:
    obj = _from_fog(payload, region_from_topic)
    if isinstance(obj, Reject):
        return obj
    vals = _counts(obj, (("seq", MAX_ML), ("chunk", 10**6), ("chunks", 10**6)))
    if isinstance(vals, Reject):
        return vals
    if not vals["chunk"] < vals["chunks"]:
        return _rej("bad_field", "chunk", "chunk must be below chunks")
    meters = obj.get("meters")
    if (not isinstance(meters, list) or len(meters) > DIRECTORY_CHUNK
            or not all(isinstance(m, str) and METER_RE.fullmatch(m) for m in meters)):
        return _rej("bad_field", "meters", f"meters must be a list of at most {DIRECTORY_CHUNK} meter ids")
    return DirectoryChunk(region_from_topic, vals["seq"], vals["chunk"], vals["chunks"], tuple(meters))


# --------------------------------------------------------------------------- commands
# cloud -> fog: aquafog-city/fogs/<region>/cmnd/valve (the fog sees aquafog-fog/cmnd/valve)
# fog -> cloud: aquafog-fog/summary/command/<id>, the command's status in the fog's ledger

@dataclass(frozen=True)
class CloudCommand:
    id: str
    meter: str
    state: str
    reason: str | None
    expires_ms: int


@dataclass(frozen=True)
class CommandStatus:
    region: str
    id: str
    meter: str
    state: str
    status: str
    error: str | None


def encode_command(c: CloudCommand) -> bytes:
    return json.dumps({"v": 1, "id": c.id, "meter": c.meter, "state": c.state, "reason": c.reason,
                       "expires_ms": c.expires_ms}, separators=(",", ":")).encode()


def _common(obj: dict) -> tuple[str, str, str] | Reject:
    cid, meter, state = obj.get("id"), obj.get("meter"), obj.get("state")
    if not isinstance(cid, str) or not COMMAND_ID_RE.fullmatch(cid):
        return _rej("bad_field", "id", "id must be 1-64 of A-Z a-z 0-9 _ . : -")
    if not isinstance(meter, str) or not METER_RE.fullmatch(meter):
        return _rej("bad_field", "meter", "meter must be a meter id")
    if state not in ("open", "closed"):
        return _rej("bad_field", "state", "state must be open or closed")
    return cid, meter, state


def decode_command(payload: bytes) -> CloudCommand | Reject:
    obj = _object(payload)
    if isinstance(obj, Reject):
        return obj
    common = _common(obj)
    if isinstance(common, Reject):
        return common
    if common[0].startswith(LOCAL_PREFIX):
        return _rej("bad_field", "id", f"id must not start with {LOCAL_PREFIX!r} (the meters' own changes)")
    reason = obj.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        return _rej("bad_field", "reason", "reason must be a text of at most 500 characters")
    expires = _count(obj, "expires_ms", MAX_ML)
    if isinstance(expires, Reject):
        return expires
    return CloudCommand(*common, reason, expires)


def encode_status(s: CommandStatus) -> bytes:
    return json.dumps({"v": 1, "region": s.region, "id": s.id, "meter": s.meter, "state": s.state,
                       "status": s.status, "error": s.error}, separators=(",", ":")).encode()


def decode_status(payload: bytes, region_from_topic: str) -> CommandStatus | Reject:
    obj = _from_fog(payload, region_from_topic)
    if isinstance(obj, Reject):
        return obj
    common = _common(obj)
    if isinstance(common, Reject):
        return common
    if obj.get("status") not in STATUSES:
        return _rej("bad_field", "status", f"status must be one of {', '.join(STATUSES)}")
    err = obj.get("error")
    if err is not None and not isinstance(err, str):
        return _rej("bad_field", "error", "error must be a text or null")
    return CommandStatus(region_from_topic, *common, obj["status"], None if err is None else err[:300])


# --------------------------------------------------------------------------- fog info
# fog -> cloud: aquafog-fog/summary/info/fog, retained, when it changes and every minute:
# where the cloud reaches the fog's API (for meter detail) and the fog's health.
API_URL_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class FogInfo:
    region: str
    api_url: str                  # scheme://host[:port]; "" when the cloud cannot reach the fog's API
    version: str
    status: str                   # "ok" | "degraded"
    problems: tuple[str, ...]
    ts_ms: int
    # the fog's policy: {"mode", "source", "updated_ms", "over", "blocked"} (policy_summary)
    policy: dict | None = None


POLICY_SOURCES = ("config", "api", "city")


def encode_info(i: FogInfo) -> bytes:
    return json.dumps({"v": 1, "region": i.region, "api_url": i.api_url, "version": i.version,
                       "status": i.status, "problems": list(i.problems), "ts_ms": i.ts_ms, "policy": i.policy},
                      separators=(",", ":")).encode()


def _policy_summary(obj) -> dict | None | Reject:
    if obj is None:
        return None
    if not isinstance(obj, dict) or obj.get("mode") not in MODES or obj.get("source") not in POLICY_SOURCES:
        return _rej("bad_field", "policy", "policy must be an object with mode and source")
    vals = _counts(obj, (("updated_ms", MAX_ML), ("over", 10**12), ("blocked", 10**12)))
    if isinstance(vals, Reject):
        return vals
    return {"mode": obj["mode"], "source": obj["source"], **vals}


def decode_info(payload: bytes, region_from_topic: str) -> FogInfo | Reject:
    obj = _from_fog(payload, region_from_topic)
    if isinstance(obj, Reject):
        return obj
    url = obj.get("api_url")
    if not isinstance(url, str) or (url and not API_URL_RE.fullmatch(url)):
        return _rej("bad_field", "api_url", "api_url must be http(s)://host[:port] without a path, or empty")
    version, status, problems = obj.get("version"), obj.get("status"), obj.get("problems")
    if not isinstance(version, str) or len(version) > 32:
        return _rej("bad_field", "version", "version must be a text of at most 32 characters")
    if status not in ("ok", "degraded"):
        return _rej("bad_field", "status", "status must be ok or degraded")
    if (not isinstance(problems, list) or len(problems) > MAX_PROBLEMS
            or not all(isinstance(p, str) for p in problems)):
        return _rej("bad_field", "problems", f"problems must be a list of at most {MAX_PROBLEMS} texts")
    ts = _count(obj, "ts_ms", MAX_ML)
    if isinstance(ts, Reject):
        return ts
    policy = _policy_summary(obj.get("policy"))
    if isinstance(policy, Reject):
        return policy
    return FogInfo(region_from_topic, url, version, status, tuple(p[:300] for p in problems), ts, policy)


# --------------------------------------------------------------------------- city figures
# cloud -> every fog: aquafog-city/city/mean/<period> (the fog sees aquafog-fog/city/mean/<period>),
# retained; what the fogs' policies compare with, and keep using while the link is down.

@dataclass(frozen=True)
class CityMean:
    period: str
    key: str
    meters: int
    sum_ml: int
    regions: tuple[str, ...]
    ts_ms: int


def encode_city_mean(m: CityMean) -> bytes:
    return json.dumps({"v": 1, "period": m.period, "key": m.key, "meters": m.meters, "sum_ml": m.sum_ml,
                       "regions": list(m.regions), "ts_ms": m.ts_ms}, separators=(",", ":")).encode()


def decode_city_mean(payload: bytes) -> CityMean | Reject:
    obj = _object(payload)
    if isinstance(obj, Reject):
        return obj
    period, key = obj.get("period"), obj.get("key")
    if period not in PERIODS:
        return _rej("bad_field", "period", f"period must be one of {', '.join(PERIODS)}")
    if not isinstance(key, str) or not _KEY_RE[period].fullmatch(key):
        return _rej("bad_field", "key", "key must be the period's date")
    vals = _counts(obj, (("meters", 10**12), ("sum_ml", MAX_ML), ("ts_ms", MAX_ML)))
    if isinstance(vals, Reject):
        return vals
    regions = obj.get("regions")
    if not isinstance(regions, list) or not all(isinstance(r, str) and REGION_RE.fullmatch(r) for r in regions):
        return _rej("bad_field", "regions", "regions must be a list of region names")
    return CityMean(period, key, vals["meters"], vals["sum_ml"], tuple(regions), vals["ts_ms"])


# --------------------------------------------------------------------------- city policy
# cloud -> every fog: aquafog-city/city/policy (the fog sees aquafog-fog/city/policy),
# retained: the policy settings a city operator set at the cloud (policy.py). A fog adopts
# them unless its own settings changed later (the newest change wins).

@dataclass(frozen=True)
class CityPolicy:
    settings: PolicySettings
    ts_ms: int


def encode_city_policy(p: CityPolicy) -> bytes:
    return json.dumps({"v": 1, "settings": p.settings.to_json(), "ts_ms": p.ts_ms}, separators=(",", ":")).encode()


def decode_city_policy(payload: bytes) -> CityPolicy | Reject:
    obj = _object(payload)
    if isinstance(obj, Reject):
        return obj
    parsed = parse_settings(obj.get("settings"), "settings.")
    if isinstance(parsed, list):
        return _rej("bad_field", parsed[0].split(":", 1)[0], "; ".join(parsed)[:300])
    ts = _count(obj, "ts_ms", MAX_ML)
    if isinstance(ts, Reject):
        return ts
    return CityPolicy(parsed, ts)
