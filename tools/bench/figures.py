"""What every benchmark here prints and computes the same way: a progress line, a
percentile, and the p50/p99/max/mean summary of a list of latencies in ms."""

from __future__ import annotations


def log(msg: str) -> None:
    print(msg, flush=True)


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def stats(xs: list[float]) -> dict:
    return {"p50_ms": round(pct(xs, 50), 1), "p99_ms": round(pct(xs, 99), 1), "max_ms": round(max(xs), 1),
            "mean_ms": round(sum(xs) / len(xs), 1)}
