"""The fog holds a burst, scaled down from `make bench --only load` (tools/bench/load.py) so
the benchmark's code runs in every `make test`: a real Mosquitto and gateway process, 200
emulated meters (real firmware, each its own connection) reporting every 2 s, a generator
process adding 4x their rate for 20 s, a probe process timing publish -> persistence ack.
Nothing may be lost, the lag must be back to normal within the goal after the burst, and
the gateway's memory must not grow without bound."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench"
sys.path.insert(0, str(BENCH))

import load  # noqa: E402

pytestmark = pytest.mark.skipif(not load.TICK, reason="needs /proc")


def test_burst_is_held(tmp_path):
    r = load.measure(tmp_path, meters=200, interval_s=2, factor=5.0, burst_s=20, pre_s=12, post_s=15,
                     probes=4, probe_every_s=0.2, sample_s=1.0, workers=8)
    store, lag, rss, rates = r["store"], r["lag"], r["rss"], r["rates"]
    # the burst happened: the generator kept its schedule and the gateway took the extra rate
    assert rates["generator_behind_max_s"] < 2.0, rates
    assert rates["during_burst_s"] > 3.0 * rates["before_burst_s"], rates
    # nothing lost: every distinct reading of every sender is stored, every register is exact
    assert store["meters"]["readings"] > 200 * 15 and store["generator"]["readings"] > 5000, store
    assert store["lost"] == 0, store
    assert store["meters"]["litres_wrong"] == 0, store["meters"]["litres_wrong_first"]
    # the lag went back to normal within the goal, and every probe was answered
    assert lag["samples"]["before"] >= 20 and lag["samples"]["after"] >= 20, lag["samples"]
    assert lag["recovery_s"] is not None and lag["recovery_s"] <= load.RECOVERY_GOAL_S, lag
    assert r["probe_unacked_at_stop"] == 0
    # memory: the gateway's RSS at the burst's end within its bound (before it + SQLite's page cache
    # + the new meters' state), and about flat after it
    g = rss["gateway_mb"]
    assert "gateway-receiver" in rss["roles"] and "mosquitto" in rss["roles"], rss["roles"]
    assert g["end_of_burst"] <= rss["gateway_bound_mb"], (g, rss["gateway_bound_mb"])
    assert g["end"] <= g["end_of_burst"] * 1.2, g
