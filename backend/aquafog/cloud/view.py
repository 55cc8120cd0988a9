"""The city as the cloud sees it: the newest partial of every fog per period, and the
merged answers (federation.py says why they are exact), cached until a partial changes."""

from __future__ import annotations

import threading

from ..federation import MAX_K, Partial, as_run, city_mean, exact_limit, merge_runs


class CityView:
    def __init__(self):
        self._lock = threading.Lock()
        self._parts: dict[tuple[str, str], dict[str, Partial]] = {}  # (period, key) -> region -> partial
        # the same top lists as sort keys (-ml, meter, region), made once per partial
        self._runs: dict[tuple[str, str], dict[str, list]] = {}
        self._merged: dict[tuple[str, str], tuple[list, int]] = {}   # (period, key) -> (top, exact limit)
        self._version: dict[tuple[str, str], int] = {}  # bumped by every kept partial
        self.regions: dict[str, int] = {}  # region -> ts_ms of its newest partial

    def put(self, p: Partial) -> bool:
        """Keep p if it is newer than what its fog sent for that period; True when kept."""
        with self._lock:
            per = self._parts.setdefault((p.period, p.key), {})
            old = per.get(p.region)
            if old is not None and old.seq >= p.seq:
                return False
            per[p.region] = p
            self._runs.setdefault((p.period, p.key), {})[p.region] = as_run(p)
            self._merged.pop((p.period, p.key), None)
            self._version[(p.period, p.key)] = self._version.get((p.period, p.key), 0) + 1
            self.regions[p.region] = max(self.regions.get(p.region, 0), p.ts_ms)
            return True

    def version(self, period: str, key: str) -> int:
        """Grows with every partial kept for (period, key): answers made from the view are
        valid while it stays the same."""
        return self._version.get((period, key), 0)

    def partials(self, period: str, key: str) -> list[Partial]:
        with self._lock:
            return sorted(self._parts.get((period, key), {}).values(), key=lambda p: p.region)

    def top(self, period: str, key: str) -> tuple[list[tuple[str, int, str]], int]:
        """(merged list, exact limit): the list is as long as it is exact."""
        with self._lock:
            hit = self._merged.get((period, key))
            if hit is not None:
                return hit
            parts = list(self._parts.get((period, key), {}).values())
            runs = list(self._runs.get((period, key), {}).values())
            version = self._version.get((period, key), 0)
        limit = exact_limit(parts) if parts else MAX_K
        merged = (merge_runs(runs, limit), limit)
        with self._lock:
            if self._version.get((period, key), 0) == version:  # no partial arrived meanwhile
                self._merged[(period, key)] = merged
        return merged

    def mean(self, period: str, key: str) -> tuple[int, int, list[Partial]]:
        parts = self.partials(period, key)
        total, count = city_mean(parts)
        return total, count, parts
