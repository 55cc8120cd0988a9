"""Consumption policies: which meters a fog blocks automatically, and why.

Two rules, over one period (the current day or month, in the utility's time zone):

- mean: a meter whose consumption exceeds `mean_factor` x the city mean (factor 1.0: the
  requirement that nobody exceeds the mean). A fog in a city uses the mean the cloud sends
  (the last known one while the link is down, but only for the same period: a new month
  starts without one); a fog on its own uses its own mean.
- cap: a meter above `cap_m3` cubic metres, or above its own entry in `caps_m3`, which
  replaces the global cap for that meter (higher or lower).

Comparisons are exact, in integer millilitres: consumption ml exceeds factor x sum/meters
iff ml > floor(factor x sum / meters), with the factor as the decimal fraction it was written
as. `exempt` meters (a hospital, say) are listed but never blocked.

`mode`: "off" evaluates nothing; "dry_run" lists who would be blocked and blocks nobody;
"enforce" blocks them (gateway/enforcer.py). Settings come from the [policy] table of the
gateway config and can be replaced through PUT /api/v1/policy; the same checks apply to both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable

from .protocol import METER_ID_RE

MODES = ("off", "dry_run", "enforce")
PERIODS = ("day", "month")
RULES = ("cap", "mean")
ML_PER_M3 = 1_000_000
MAX_M3 = 10**9
MAX_FACTOR = 1000
MAX_LISTED = 100_000  # exempt meters and per-meter caps, each


@dataclass(frozen=True)
class PolicySettings:
    mode: str = "off"
    period: str = "month"
    mean_rule: bool = True
    mean_factor: float = 1.0
    cap_m3: float | None = None
    caps_m3: dict[str, float] = field(default_factory=dict)
    exempt: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"mode": self.mode, "period": self.period, "mean_rule": self.mean_rule,
                "mean_factor": self.mean_factor, "cap_m3": self.cap_m3, "caps_m3": dict(self.caps_m3),
                "exempt": list(self.exempt)}

    @property
    def factor(self) -> Fraction:
        return Fraction(str(self.mean_factor))  # 1.1 is 11/10, not the nearest double

    def cap_ml(self, meter: str) -> int | None:
        cap = self.caps_m3.get(meter, self.cap_m3)
        return None if cap is None else to_ml(cap)


def to_ml(m3: float) -> int:
    return math.floor(Fraction(str(m3)) * ML_PER_M3)


def _show(v) -> str:
    return repr(v)[:40]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_settings(obj, prefix: str = "") -> PolicySettings | list[str]:
    """Settings from a TOML table or a JSON object; every error at once as `<field>: <problem>`
    (`prefix` is "policy." for the config file)."""
    if not isinstance(obj, dict):
        return [f"{prefix.rstrip('.') or 'body'}: must be a table/object of policy settings"]
    errors: list[str] = []
    known = PolicySettings.__dataclass_fields__
    for key in obj:
        if key not in known:
            errors.append(f"{prefix}{str(key)[:40]}: unknown setting (known: {', '.join(known)})")
    d = PolicySettings()
    mode, period = obj.get("mode", d.mode), obj.get("period", d.period)
    if mode not in MODES:
        errors.append(f"{prefix}mode: must be one of {', '.join(MODES)}, got {_show(mode)}")
    if period not in PERIODS:
        errors.append(f"{prefix}period: must be day or month, got {_show(period)}")
    mean_rule = obj.get("mean_rule", d.mean_rule)
    if not isinstance(mean_rule, bool):
        errors.append(f"{prefix}mean_rule: must be true or false, got {_show(mean_rule)}")
    factor = obj.get("mean_factor", d.mean_factor)
    if not _number(factor) or not 0 < factor <= MAX_FACTOR:
        errors.append(f"{prefix}mean_factor: must be a number above 0 and at most {MAX_FACTOR} "
                      f"(1.0 blocks whoever exceeds the city mean), got {_show(factor)}")
    cap = obj.get("cap_m3", d.cap_m3)
    if cap is not None and (not _number(cap) or not 0 < cap <= MAX_M3):
        errors.append(f"{prefix}cap_m3: must be cubic metres per period, above 0 and at most {MAX_M3}, "
                      f"or null for no global cap, got {_show(cap)}")
    caps = obj.get("caps_m3", {})
    if not isinstance(caps, dict) or len(caps) > MAX_LISTED:
        errors.append(f"{prefix}caps_m3: must map meter ids to cubic metres (at most {MAX_LISTED} meters)")
        caps = {}
    for meter, v in caps.items():
        if not METER_ID_RE.fullmatch(meter):
            errors.append(f"{prefix}caps_m3: {meter[:40]!r} is not a meter id (1-32 of a-z 0-9 _ -)")
        elif not _number(v) or not 0 < v <= MAX_M3:
            errors.append(f"{prefix}caps_m3.{meter}: must be cubic metres above 0 and at most {MAX_M3}, "
                          f"got {_show(v)}")
    exempt = obj.get("exempt", [])
    if not isinstance(exempt, list) or len(exempt) > MAX_LISTED:
        errors.append(f"{prefix}exempt: must be a list of meter ids (at most {MAX_LISTED})")
        exempt = []
    for meter in exempt:
        if not isinstance(meter, str) or not METER_ID_RE.fullmatch(meter):
            errors.append(f"{prefix}exempt: {_show(meter)} is not a meter id (1-32 of a-z 0-9 _ -)")
    if errors:
        return errors
    return PolicySettings(mode, period, mean_rule, float(factor), None if cap is None else float(cap),
                          {m: float(v) for m, v in sorted(caps.items())}, tuple(sorted(set(exempt))))


@dataclass(frozen=True)
class Mean:
    """The mean a fog evaluates with: sum over meters, from the cloud or the fog itself."""

    key: str
    sum_ml: int
    meters: int
    source: str        # "city" (from the cloud) or "fog" (a fog on its own)
    as_of_ms: int


@dataclass(frozen=True)
class Violation:
    meter: str
    ml: int
    rules: tuple[tuple[str, int], ...]  # (rule, threshold_ml) of every rule it exceeds
    exempt: bool


def mean_threshold_ml(settings: PolicySettings, mean: Mean | None) -> int | None:
    """The largest consumption the mean rule allows, or None when the rule does not apply."""
    if not settings.mean_rule or mean is None or mean.meters == 0:
        return None
    f = settings.factor
    return (f.numerator * mean.sum_ml) // (f.denominator * mean.meters)


def violations(settings: PolicySettings, usage: Iterable[tuple[str, int]], mean: Mean | None) -> list[Violation]:
    """The meters in `usage` (meter, ml in the period) that break a rule, by ml descending
    then meter id. Pure: the enforcer feeds it a pre-filtered query, the tests everything."""
    mean_max = mean_threshold_ml(settings, mean)
    exempt = set(settings.exempt)
    out = []
    for meter, ml in usage:
        rules = []
        cap = settings.cap_ml(meter)
        if cap is not None and ml > cap:
            rules.append(("cap", cap))
        if mean_max is not None and ml > mean_max:
            rules.append(("mean", mean_max))
        if rules:
            out.append(Violation(meter, ml, tuple(rules), meter in exempt))
    out.sort(key=lambda v: (-v.ml, v.meter))
    return out


def lowest_threshold_ml(settings: PolicySettings, mean: Mean | None) -> int | None:
    """No meter at or below this breaks a rule, except those with their own cap (the
    query filter); None when no rule can fire for meters without their own cap."""
    limits = [t for t in (mean_threshold_ml(settings, mean),
                          None if settings.cap_m3 is None else to_ml(settings.cap_m3)) if t is not None]
    return min(limits) if limits else None


def describe(rule: str, threshold_ml: int, ml: int, period: str, key: str, settings: PolicySettings,
             mean: Mean | None) -> str:
    """The reason recorded on an automatic block, with the figures that triggered it."""
    used = f"used {ml / 1000:.3f} L in {period} {key}"
    if rule == "cap":
        return f"policy cap: {used}, above the cap of {threshold_ml / 1000:.3f} L"
    assert mean is not None
    return (f"policy mean: {used}, above {settings.mean_factor:g} x the {mean.source} mean "
            f"({mean.sum_ml / 1000:.3f} L over {mean.meters} meters) = {threshold_ml / 1000:.3f} L")
