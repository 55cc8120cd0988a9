"""Fog partials (backend/aquafog/federation.py): the codec, its rejects, and the merge
(federation.merge_top and the cloud's CityView), proven equal to the brute-force global
ranking and mean (pure unit tests)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from aquafog.federation import (Partial, city_mean, decode_partial, encode_partial, exact_limit, merge_top,
                                period_key)
from aquafog.cloud.view import CityView
from aquafog.protocol import Reject


def partial_of(region: str, usage: dict[str, int], k: int, meters: int | None = None, seq: int = 1) -> Partial:
    """What a fog with this per-meter consumption publishes (the fog's own query, in Python)."""
    ranked = sorted(usage.items(), key=lambda kv: (-kv[1], kv[0]))
    return Partial(region, "day", "2026-11-26", seq, 1795650000000, len(usage) if meters is None else meters,
                   sum(usage.values()), k, tuple(ranked[:k]))


fog_usage = st.dictionaries(st.from_regex(r"[a-z][0-9]{1,4}", fullmatch=True),
                            st.integers(0, 5_000_000) | st.sampled_from([0, 1000, 1000, 2000]),  # plenty of ties
                            max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.lists(fog_usage, min_size=1, max_size=6), st.integers(1, 40), st.data())
def test_merged_top_n_equals_the_brute_force_city_ranking(fogs, k, data):
    # a meter belongs to one fog: drop ids that another fog already has
    seen: set[str] = set()
    owned = []
    for usage in fogs:
        mine = {m: ml for m, ml in usage.items() if m not in seen}
        seen |= set(mine)
        owned.append(mine)
    partials = [partial_of("r%d" % i, u, k) for i, u in enumerate(owned)]
    everyone = sorted(((m, ml) for u in owned for m, ml in u.items()), key=lambda kv: (-kv[1], kv[0]))
    n = data.draw(st.integers(1, k))
    assert n <= exact_limit(partials)
    merged = merge_top(partials, n)
    assert [(m, ml) for m, ml, _ in merged] == everyone[:n]
    owner = {m: "r%d" % i for i, u in enumerate(owned) for m in u}
    assert all(owner[m] == region for m, _, region in merged)
    view = CityView()  # the cloud's cached merge gives the same answer
    for p in partials:
        assert view.put(p)
    top, limit = view.top("day", "2026-11-26")
    assert top[:n] == merged and limit == exact_limit(partials)
    total, count = city_mean(partials)
    assert (total, count) == (sum(ml for _, ml in everyone), len(everyone))


def test_exact_limit_is_the_smallest_cut_list():
    full = partial_of("a", {"m%d" % i: i for i in range(10)}, k=5)
    short = partial_of("b", {"x1": 3}, k=2)
    assert not full.complete and short.complete
    assert exact_limit([full, short]) == 5
    assert exact_limit([short]) > 1000


def test_round_trip_and_key_format():
    p = partial_of("north", {"m0001": 912000, "m0002": 880500, "m0003": 880500}, k=1000, meters=7, seq=42)
    raw = encode_partial(p)
    assert json.loads(raw)["top"] == [["m0001", 912000], ["m0002", 880500], ["m0003", 880500]]
    assert decode_partial(raw, "north") == p
    assert period_key("day", 20261126) == "2026-11-26" and period_key("month", 20261126) == "2026-11"


def _bad(**change):
    obj = json.loads(encode_partial(partial_of("north", {"m1": 5, "m2": 3}, k=10)))
    obj.update(change)
    return json.dumps(obj).encode()


def test_bad_partials_are_rejected_naming_the_field():
    cases = [
        (b"nope", "not_json", ""),
        (b"[1]", "not_object", ""),
        (_bad(v=2), "unsupported_version", "v"),
        (_bad(region="North!"), "bad_field", "region"),
        (_bad(period="week"), "bad_field", "period"),
        (_bad(key="26/11/2026"), "bad_field", "key"),
        (_bad(seq=-1), "bad_field", "seq"),
        (_bad(meters="7"), "bad_field", "meters"),
        (_bad(k=0), "bad_field", "k"),
        (_bad(top=[["m2", 3], ["m1", 5]]), "bad_field", "top"),      # out of order
        (_bad(top=[["m1", 5], ["m1", 5]]), "bad_field", "top"),      # duplicate
        (_bad(top=[["M1", 5]]), "bad_field", "top"),
        (_bad(top=[["m1", 1.5]]), "bad_field", "top"),
        (_bad(k=1), "bad_field", "top"),                             # longer than k
        (_bad(sum_ml=1), "bad_field", "sum_ml"),
    ]
    for payload, reason, fld in cases:
        r = decode_partial(payload)
        assert isinstance(r, Reject) and (r.reason, r.field) == (reason, fld), (payload, r)
    r = decode_partial(_bad(), "south")
    assert isinstance(r, Reject) and r.reason == "region_mismatch"


def test_fog_info_round_trips_and_bad_info_names_the_field():
    from aquafog.federation import FogInfo, decode_info, encode_info
    info = FogInfo("north", "http://10.0.0.7:8080", "0.4.0", "degraded", ("receiver is reconnecting",), 1)
    assert decode_info(encode_info(info), "north") == info
    good = json.loads(encode_info(info))
    for field, value in (("api_url", "http://10.0.0.7:8080/admin?x=1"), ("api_url", "file:///etc/passwd"),
                         ("status", "fine"), ("problems", "none"), ("version", 4), ("region", "south")):
        r = decode_info(json.dumps({**good, field: value}).encode(), "north")
        assert isinstance(r, Reject) and r.field == field, (field, value, r)
    assert decode_info(json.dumps({**good, "api_url": ""}).encode(), "north").api_url == ""
