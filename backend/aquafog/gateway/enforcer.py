"""Applies the consumption policies (policy.py) at this fog, every `policy_interval_ms`.

Each round:
1. lifts blocks that are over: the period rolled over, or the meter became exempt. The
   valve is re-opened only if the policy's close is still the newest intent for it; an
   operator's (or the meter's own) later command is left alone;
2. finds the meters over a rule with one indexed query (consumption above the lowest
   threshold, plus the meters with their own cap), exact in integer ml;
3. in "enforce" mode closes the valve of each one not yet blocked in this period, through
   the same command ledger as an operator (origin "policy": applied only when the meter
   confirms), and records the block with the rule and the figures. "dry_run" lists them.

A block an operator overrides (any later valve command for the meter, from the fog's API
or the cloud) is recorded as released by the operator, and the meter is not blocked again
in that period. Each block raises a `policy_block` alert (alerts.py) with the rule and the
figures, cleared when the block ends. Settings: the config's [policy], the fog's API, or the city's from the cloud
(offer_city); the newest change wins. Store changes go through the writer thread, in
chunks, and only when there is something to change, so ingest is never held long.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from sqlalchemy import and_, func, or_, select, update

from ..config import GatewayConfig
from ..federation import CityMean, CityPolicy, period_key
from ..periods import Calendar
from ..policy import Mean, PolicySettings, describe, parse_settings, lowest_threshold_ml, mean_threshold_ml, violations
from ..store.schema import commands, consumption_daily, consumption_monthly, meters, policy_blocks, policy_settings
from .alerts import Changes, block_message, clear_alert, publish, raise_alert

log = logging.getLogger("aquafog.policy")

CHUNK = 1000            # meters blocked or released per writer transaction
INTENT_ORIGINS = ("api", "cloud", "meter")  # commands that supersede a policy block


def _now_ms(clock) -> int:
    return int(clock() * 1000)


class Enforcer:
    def __init__(self, cfg: GatewayConfig, engine, writer, city_mean: Callable[[str], CityMean | None],
                 clock=time.time):
        self.cfg = cfg
        self.engine = engine
        self.writer = writer
        self.city_mean = city_mean
        self.clock = clock
        self.calendar = Calendar(cfg.timezone)
        self.settings = cfg.policy_settings
        self.source = "config"
        self.updated_ms = 0
        self.last: dict | None = None   # the latest evaluation, for GET /api/v1/policy
        self.last_error: str | None = None
        self.rounds = 0
        self._city: CityPolicy | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy", daemon=True)

    # --- settings ----------------------------------------------------------------------------
    def load(self) -> None:
        """The settings in force: the stored ones, unless the config file's [policy] changed
        since it was last read (then the file wins and is stored)."""
        from_config = json.dumps(self.cfg.policy_settings.to_json(), sort_keys=True)

        def fn(conn):
            row = conn.execute(select(policy_settings).where(policy_settings.c.id == 1)).mappings().first()
            if row is not None and row["from_config"] == from_config:
                return row, []
            now = _now_ms(self.clock)
            values = {"settings": from_config, "source": "config", "from_config": from_config, "updated_ms": now}
            if row is None:
                conn.execute(policy_settings.insert().values(id=1, **values))
            else:
                log.info("policy: the config file's [policy] changed since the last start; it replaces the "
                         "settings stored through the API")
                conn.execute(update(policy_settings).where(policy_settings.c.id == 1).values(**values))
            return values, []
        row = self.writer.call(fn)
        parsed = parse_settings(json.loads(row["settings"]))
        if isinstance(parsed, list):  # stored by a newer or broken gateway: the file is the safe choice
            log.error("policy: stored settings are invalid (%s); using the config file's", "; ".join(parsed))
            parsed = self.cfg.policy_settings
        self.settings, self.source, self.updated_ms = parsed, row["source"], row["updated_ms"]

    def replace(self, settings: PolicySettings, source: str = "api", updated_ms: int | None = None) -> dict:
        """New settings from the fog's API (or the city's, `source` "city", stamped by the cloud):
        stored, and evaluated at once."""
        now = _now_ms(self.clock) if updated_ms is None else updated_ms

        def fn(conn):
            conn.execute(update(policy_settings).where(policy_settings.c.id == 1).values(
                settings=json.dumps(settings.to_json(), sort_keys=True), source=source, updated_ms=now))
            return None, []
        self.writer.call(fn)
        self.settings, self.source, self.updated_ms = settings, source, now
        log.info("policy settings replaced (from the %s): %s", "cloud" if source == "city" else "API",
                 settings.to_json())
        self._wake.set()
        return self.describe_settings()

    def offer_city(self, p: CityPolicy) -> None:
        """The city's settings arrived from the cloud (on the link's thread): adopted in the
        next round if newer than the settings in force."""
        self._city = p
        self._wake.set()

    def _adopt_city(self) -> None:
        p, self._city = self._city, None
        if p is not None and p.ts_ms > self.updated_ms:
            self.replace(p.settings, "city", p.ts_ms)

    def summary(self) -> dict:
        """For the fog's info to the cloud."""
        counts = (self.last or {}).get("counts", {})
        return {"mode": self.settings.mode, "source": self.source, "updated_ms": self.updated_ms,
                "over": counts.get("over", 0), "blocked": counts.get("blocked", 0)}

    def describe_settings(self) -> dict:
        return {"settings": self.settings.to_json(), "source": self.source, "updated_ms": self.updated_ms,
                "interval_ms": self.cfg.policy_interval_ms}

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Enforcer":
        self.load()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def _run(self) -> None:
        interval = self.cfg.policy_interval_ms / 1000
        while not self._stop.is_set():
            try:
                self._adopt_city()
                self.tick()
                self.last_error = None
            except Exception as exc:  # the store busy, the writer stopping: next round
                if self.last_error is None:
                    log.exception("policy round failed; retrying every %.1f s", interval)
                self.last_error = f"policy evaluation failed: {exc}"
            self._wake.wait(interval)
            self._wake.clear()

    # --- one round ---------------------------------------------------------------------------
    def _mean(self, conn, period: str, key: str, key_int: int) -> tuple[Mean | None, str | None]:
        if self.cfg.region:
            m = self.city_mean(period)
            if m is None or m.key != key:
                return None, (f"no city mean for {period} {key} yet: the mean rule waits for the cloud "
                              "(check the bridge and GET /api/v1/city/mean)")
            return Mean(m.key, m.sum_ml, m.meters, "city", m.ts_ms), None
        table, col = _table(period)
        total = conn.execute(select(func.coalesce(func.sum(table.c.ml), 0)).where(col == key_int)).scalar_one()
        n = conn.execute(select(func.count()).select_from(meters)).scalar_one()
        return Mean(key, int(total), int(n), "fog", _now_ms(self.clock)), None

    def _usage(self, conn, s: PolicySettings, mean: Mean | None, key_int: int) -> dict[str, int]:
        table, col = _table(s.period)
        usage: dict[str, int] = {}
        lowest = lowest_threshold_ml(s, mean)
        if lowest is not None:
            usage.update(conn.execute(select(table.c.meter, table.c.ml).where(col == key_int, table.c.ml > lowest)).all())
        own = sorted(s.caps_m3)
        for i in range(0, len(own), 500):
            usage.update(conn.execute(select(table.c.meter, table.c.ml).where(
                col == key_int, table.c.meter.in_(own[i:i + 500]))).all())
        return usage

    def tick(self) -> dict:
        s = self.settings
        now = self.clock()
        day, month = self.calendar.keys(int(now))
        keys = {"day": period_key("day", day), "month": period_key("month", day)}
        self._release(keys, set(s.exempt))
        key, key_int = keys[s.period], (day if s.period == "day" else month)
        problems: list[str] = []
        mean = None
        found: list = []
        if s.mode != "off":
            with self.engine.connect() as conn:
                mean, why = self._mean(conn, s.period, key, key_int)
                if why and s.mean_rule:
                    problems.append(why)
                found = violations(s, self._usage(conn, s, mean, key_int).items(), mean)
        actions = self._act(s, found, key, mean)
        counts: dict[str, int] = {}
        for a in actions.values():
            counts[a] = counts.get(a, 0) + 1
        mean_max = mean_threshold_ml(s, mean)
        self.last = {
            "evaluated_ms": int(now * 1000), "mode": s.mode, "period": {"kind": s.period, "key": key},
            "mean": None if mean is None else {
                "source": mean.source, "sum_ml": mean.sum_ml, "meters": mean.meters,
                "mean_litres": round(mean.sum_ml / mean.meters / 1000, 3) if mean.meters else None,
                "as_of_ms": mean.as_of_ms},
            "thresholds": {"mean_ml": mean_max, "cap_ml": s.cap_ml(""), "own_caps": len(s.caps_m3)},
            "problems": problems,
            "counts": {"over": len(found), **counts},
            "meters": [{"meter": v.meter, "ml": v.ml, "litres": v.ml / 1000,
                        "rules": [{"rule": r, "threshold_ml": t} for r, t in v.rules],
                        "action": actions[v.meter]} for v in found],
        }
        self.rounds += 1
        return self.last

    def _act(self, s: PolicySettings, found: list, key: str, mean: Mean | None) -> dict[str, str]:
        """What happens to each meter over a rule: exempt, would_block (dry run), blocked,
        released (an operator re-opened it in this period), valve_closed (closed by another command)."""
        actions = {v.meter: "exempt" for v in found if v.exempt}
        if not found:
            return actions
        # read-only first, so a steady state (everyone over a rule already blocked) costs the
        # writer nothing; _block checks again on the writer for the few left to block
        b = policy_blocks.c
        with self.engine.connect() as conn:
            done = dict(conn.execute(select(meters.c.meter, b.released_ms).join(meters, meters.c.pk == b.meter_pk)
                                     .where(b.period == s.period, b.period_key == key)).all())
            closed = set(conn.execute(select(meters.c.meter).where(meters.c.valve_desired == "closed")).scalars())
        todo = []
        for v in found:
            if v.exempt:
                continue
            if v.meter in done:
                actions[v.meter] = "blocked" if done[v.meter] is None else "released"
            elif v.meter in closed:
                actions[v.meter] = "valve_closed"
            elif s.mode != "enforce":
                actions[v.meter] = "would_block"
            else:
                todo.append(v)
        for i in range(0, len(todo), CHUNK):
            part = todo[i:i + CHUNK]
            changes = Changes()
            actions.update(self.writer.call(lambda conn, part=part: self._block(conn, s, part, key, mean, changes)))
            publish(self.writer.live, changes)
        return actions

    def _block(self, conn, s: PolicySettings, part: list, key: str, mean: Mean | None, changes: Changes):
        b = policy_blocks.c
        ids = [v.meter for v in part]
        self.writer.acc.load(conn, ids)
        states = {m: self.writer.acc.states.get(m) for m in ids}
        pks = [st.pk for st in states.values() if st is not None]
        done = dict(conn.execute(select(b.meter_pk, b.released_ms).where(
            b.period == s.period, b.period_key == key, b.meter_pk.in_(pks))).all())
        now = _now_ms(self.clock)
        out, pubs, rows = {}, [], []
        for v in part:
            st = states[v.meter]
            if st is None:
                out[v.meter] = "unregistered"
            elif st.pk in done:
                out[v.meter] = "blocked" if done[st.pk] is None else "released"
            elif st.valve_desired == "closed":
                out[v.meter] = "valve_closed"
            elif s.mode != "enforce":
                out[v.meter] = "would_block"
            else:
                rule, threshold = v.rules[0]
                reason = describe(rule, threshold, v.ml, s.period, key, s, mean)
                row, _, p = self.writer.ledger.submit(conn, st, "closed", reason, None, "policy", now)
                pubs.extend(p)
                used_mean = any(r == "mean" for r, _ in v.rules)
                rows.append({"meter_pk": st.pk, "period": s.period, "period_key": key, "rule": rule,
                             "rules": json.dumps([list(r) for r in v.rules]), "ml": v.ml, "threshold_ml": threshold,
                             "mean_sum_ml": mean.sum_ml if used_mean and mean else None,
                             "mean_meters": mean.meters if used_mean and mean else None,
                             "mean_source": mean.source if used_mean and mean else None,
                             "mean_factor": str(s.mean_factor) if used_mean else None,
                             "command_id": row["id"], "created_ms": now})
                out[v.meter] = "blocked"
                log.info("policy: blocked %s (%s)", v.meter, reason)
                raise_alert(conn, v.meter, "policy_block", block_message(v.meter, reason, s.period, row["id"]), {
                    "rule": rule, "rules": [{"rule": r, "threshold_ml": t} for r, t in v.rules], "ml": v.ml,
                    "litres": v.ml / 1000, "threshold_ml": threshold, "period": {"kind": s.period, "key": key},
                    "mean": {"source": mean.source, "sum_ml": mean.sum_ml, "meters": mean.meters,
                             "factor": float(s.mean_factor)} if used_mean and mean else None,
                    "command_id": row["id"]}, now, changes)
        if rows:
            conn.execute(policy_blocks.insert(), rows)
        return out, pubs

    def _release(self, keys: dict[str, str], exempt: set[str]) -> None:
        with self.engine.connect() as conn:  # read-only first: most rounds have nothing to lift
            superseded, rows = self._endings(conn, keys, exempt)
        if superseded or rows:
            changes = Changes()
            self.writer.call(lambda conn: self._release_in(conn, keys, exempt, changes))
            publish(self.writer.live, changes)

    def _endings(self, conn, keys: dict[str, str], exempt: set[str]) -> tuple[dict, list]:
        """Active blocks that end: {block id: (command id, "operator"|"meter")} of those a later
        command superseded, and the rows of those to re-open (period over, or exempt now)."""
        b, c = policy_blocks.c, commands.c
        later = conn.execute(
            select(b.id, c.id.label("cid"), c.origin).join(commands, and_(
                c.meter_pk == b.meter_pk, c.created_ms >= b.created_ms, c.id != b.command_id,
                c.origin.in_(INTENT_ORIGINS)))
            .where(b.released_ms.is_(None)).order_by(c.created_ms)).all()
        superseded: dict[int, tuple[str, str]] = {}
        for bid, cid, origin in later:
            superseded.setdefault(bid, (cid, "meter" if origin == "meter" else "operator"))
        over = or_(and_(b.period == "day", b.period_key != keys["day"]),
                   and_(b.period == "month", b.period_key != keys["month"]))
        q = select(b.id, b.period, b.period_key, meters.c.meter).join(meters, meters.c.pk == b.meter_pk).where(
            b.released_ms.is_(None), b.id.not_in(list(superseded)) if superseded else True)
        rows = list(conn.execute(q.where(over).limit(CHUNK)))
        if exempt:
            rows += list(conn.execute(q.where(~over, meters.c.meter.in_(sorted(exempt))).limit(CHUNK)))
        return superseded, rows

    def _release_in(self, conn, keys: dict[str, str], exempt: set[str], changes: Changes):
        b = policy_blocks.c
        now = _now_ms(self.clock)
        superseded, rows = self._endings(conn, keys, exempt)
        ids = list(superseded)
        owners = {bid: meter for i in range(0, len(ids), 500) for bid, meter in conn.execute(
            select(b.id, meters.c.meter).join(meters, meters.c.pk == b.meter_pk).where(b.id.in_(ids[i:i + 500])))}
        for bid, (cid, by) in superseded.items():
            conn.execute(update(policy_blocks).where(b.id == bid).values(
                released_ms=now, released_by=by, release_command_id=cid))
            clear_alert(conn, owners[bid], "policy_block", now, changes, released_by=by, release_command_id=cid)
        pubs = []
        if rows:
            self.writer.acc.load(conn, [r.meter for r in rows])
        for r in rows:
            st = self.writer.acc.states.get(r.meter)
            by = "rollover" if r.period_key != keys[r.period] else "exempted"
            why = (f"policy block lifted: {r.period} {r.period_key} is over" if by == "rollover"
                   else "policy block lifted: the meter is exempt now")
            cmd, _, p = self.writer.ledger.submit(conn, st, "open", why, None, "policy", now)
            pubs.extend(p)
            conn.execute(update(policy_blocks).where(b.id == r.id).values(
                released_ms=now, released_by=by, release_command_id=cmd["id"]))
            clear_alert(conn, r.meter, "policy_block", now, changes, released_by=by, release_command_id=cmd["id"])
            log.info("policy: %s re-opened (%s)", r.meter, why)
        return None, pubs


def _table(period: str):
    if period == "day":
        return consumption_daily, consumption_daily.c.day
    return consumption_monthly, consumption_monthly.c.month
