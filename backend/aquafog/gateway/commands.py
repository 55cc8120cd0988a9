"""The command ledger: queued -> sent -> applied | failed | expired.

- queued: stored, with the meter's desired valve state updated; not yet handed to the
  broker (the meter is offline, or the gateway's broker link is down).
- sent: the broker acknowledged the command (PUBACK). Proves nothing about the valve.
- applied: the meter answered on stat/valve with ok and the requested state.
- failed: the meter answered with an error, or a newer command for the same meter
  superseded this one before it was applied.
- expired: not applied within command_ttl_s. The desired state stays; the gateway
  re-delivers it when the meter next comes back in another state.

Command ids are idempotency keys: the same id with the same request returns the
existing command; the same id with a different request is a conflict.

A meter may also change its valve on its own (it closes it on a burst). It reports that
on stat/valve with an id of its own, local-<boot>-<n>, and a `cause`. The ledger records
it as an applied command of origin "meter" and makes its state the desired one, so the
birth that follows (valve closed) does not bring back the operator's earlier "open".
A pending command for the other state is superseded by it. The operator can re-open
the valve with a new command.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection

from ..protocol import LOCAL_ID_RE, Reject, Status, Topics, ValveResult, encode_valve_command
from ..store.schema import commands, meters
from .accounting import MeterState

PENDING = ("queued", "sent")


class CommandError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownMeter(CommandError):
    status = 404
    code = "not_found"


class CommandConflict(CommandError):
    status = 409
    code = "conflict"


@dataclass
class Publish:
    topic: str
    payload: bytes
    command_id: str | None = None


def new_command_id() -> str:
    return "c-" + secrets.token_hex(8)


class CommandLedger:
    def __init__(self, topics: Topics, ttl_s: int, resend_s: int):
        self.topics = topics
        self.ttl_ms = ttl_s * 1000
        self.resend_ms = resend_s * 1000
        # ids of the commands whose status changed in the writer's current transaction; the
        # writer announces them once it commits (live events) and clears it after a rollback
        self.changed: list[str] = []

    def _publish(self, meter: str, cid: str, state: str) -> Publish:
        return Publish(self.topics.valve_command(meter), encode_valve_command(cid, state), cid)

    def _latest_pending(self, conn: Connection, meter_pk: int):
        return conn.execute(
            select(commands).where(commands.c.meter_pk == meter_pk, commands.c.status.in_(PENDING))
            .order_by(commands.c.created_ms.desc()).limit(1)
        ).mappings().first()

    def submit(self, conn: Connection, st: MeterState, state: str, reason: str | None,
               command_id: str | None, origin: str, now_ms: int) -> tuple[dict, bool, list[Publish]]:
        """Returns (command row, created?, what to publish after commit)."""
        if command_id is not None:
            existing = conn.execute(select(commands).where(commands.c.id == command_id)).mappings().first()
            if existing is not None:
                if existing["meter_pk"] == st.pk and existing["state"] == state:
                    return dict(existing), False, []
                raise CommandConflict(
                    f"command id {command_id!r} was already used for another request; "
                    "send a new command_id (or none, and the gateway makes one)", "command_id")
        cid = command_id or new_command_id()
        c = commands.c
        older = conn.execute(select(c.id).where(c.meter_pk == st.pk, c.status.in_(PENDING))).scalars().all()
        if older:
            conn.execute(update(commands).where(c.id.in_(older))
                         .values(status="failed", error=f"superseded by command {cid}", done_ms=now_ms))
            self.changed.extend(older)
        row = {
            "id": cid, "meter_pk": st.pk, "kind": "valve", "state": state, "reason": reason, "origin": origin,
            "status": "queued", "error": None, "attempts": 0, "created_ms": now_ms, "sent_ms": None,
            "done_ms": None, "expires_ms": now_ms + self.ttl_ms,
        }
        conn.execute(commands.insert(), row)
        self.changed.append(cid)
        st.valve_desired = state
        conn.execute(update(meters).where(meters.c.pk == st.pk).values(valve_desired=state))
        pubs = [self._publish(st.meter, cid, state)] if st.online else []
        return row, True, pubs

    def on_birth(self, conn: Connection, st: MeterState, status: Status, now_ms: int) -> list[Publish]:
        """A meter came (back) online: re-deliver what the operator wants of its valve."""
        if st.valve_desired is None:
            return []
        pending = self._latest_pending(conn, st.pk)
        if pending is not None:
            return [self._publish(st.meter, pending["id"], pending["state"])]
        if status.valve == st.valve_desired:
            return []
        reason = (f"re-delivery: meter came back (boot {status.boot}) with valve {status.valve}, "
                  f"desired {st.valve_desired}")
        _, _, pubs = self.submit(conn, st, st.valve_desired, reason, None, "reconcile", now_ms)
        return pubs

    def on_result(self, conn: Connection, st: MeterState, res: ValveResult, now_ms: int,
                  superseded: set[str] | None = None) -> Reject | None:
        """A meter's stat/valve. Ids of commands a meter change supersedes are added to
        `superseded`: the caller must not publish them any more."""
        c = commands.c
        row = conn.execute(select(c.meter_pk, c.status, c.state, c.origin).where(c.id == res.id)).first()
        if row is None or row.meter_pk != st.pk:
            if res.cause is None:
                return Reject("unknown_command", "id", f"no command {res.id!r} was sent to meter {st.meter}")
            if row is not None:
                return Reject("conflicting_duplicate", "id",
                              f"id {res.id!r} of a change meter {st.meter} made on its own is already the id "
                              "of another meter's command")
            if not LOCAL_ID_RE.fullmatch(res.id):
                return Reject("bad_format", "id", f"a change the meter made on its own ({res.cause}) must have "
                                                  f"an id local-<boot>-<n>, got {res.id!r}")
            self._local_change(conn, st, res, now_ms, superseded)
            return None
        if row.origin == "meter":  # a change the meter made on its own, reported again
            if row.state != res.state:
                return Reject("conflicting_duplicate", "id",
                              f"meter change {res.id!r} was recorded with valve {row.state}, now it says {res.state}")
            return None
        st.valve_reported, st.valve_told_ms = res.state, now_ms
        if row.status not in ("queued", "sent", "expired"):
            return None  # already final (a repeated answer)
        if res.ok and res.state == row.state:
            values = {"status": "applied", "error": None}
        elif res.ok:
            values = {"status": "failed", "error": f"meter reports valve {res.state}, not {row.state}"}
        else:
            values = {"status": "failed", "error": res.error}
        conn.execute(
            update(commands).where(commands.c.id == res.id)
            .values(done_ms=now_ms, sent_ms=func.coalesce(commands.c.sent_ms, now_ms), **values)
        )
        self.changed.append(res.id)
        return None

    def _local_change(self, conn: Connection, st: MeterState, res: ValveResult, now_ms: int,
                      superseded: set[str] | None) -> None:
        if res.ok:
            reason = f"{res.cause}: the meter {'closed' if res.state == 'closed' else 'opened'} its valve on its own"
        else:
            reason = f"{res.cause}: the meter could not move its valve on its own"
        row = {
            "id": res.id, "meter_pk": st.pk, "kind": "valve", "state": res.state, "reason": reason, "origin": "meter",
            "status": "applied" if res.ok else "failed", "error": None if res.ok else res.error,
            "attempts": 0, "created_ms": now_ms, "sent_ms": now_ms, "done_ms": now_ms, "expires_ms": now_ms,
        }
        conn.execute(commands.insert(), row)
        self.changed.append(res.id)
        st.valve_reported, st.valve_told_ms = res.state, now_ms
        if not res.ok:
            return  # the valve did not move: the operator's intent stands
        c = commands.c
        other = conn.execute(select(c.id).where(c.meter_pk == st.pk, c.status.in_(PENDING),
                                                c.state != res.state)).scalars().all()
        if other:
            conn.execute(update(commands).where(c.id.in_(other)).values(
                status="failed", done_ms=now_ms,
                error=f"superseded by the meter's own change {res.id} ({res.cause})"))
            self.changed.extend(other)
            if superseded is not None:
                superseded.update(other)
        st.valve_desired = res.state
        conn.execute(update(meters).where(meters.c.pk == st.pk).values(valve_desired=res.state))

    def mark_sent(self, conn: Connection, command_id: str, now_ms: int) -> None:
        c = commands.c
        r = conn.execute(update(commands).where(c.id == command_id, c.status.in_(PENDING))
                         .values(status="sent", sent_ms=now_ms, attempts=c.attempts + 1))
        if r.rowcount:
            self.changed.append(command_id)

    def sweep(self, conn: Connection, now_ms: int) -> list[Publish]:
        """Expire what waited too long; re-send what the broker took but the meter
        never answered, and what could not be handed to the broker, to online meters."""
        c = commands.c
        due = conn.execute(select(c.id).where(c.status.in_(PENDING), c.expires_ms < now_ms)).scalars().all()
        for i in range(0, len(due), 500):
            part = due[i:i + 500]
            conn.execute(
                update(commands).where(c.id.in_(part))
                .values(status="expired", done_ms=now_ms,
                        error="the meter did not confirm within command_ttl_s; the desired state is kept "
                              "and re-delivered when the meter comes back")
            )
        self.changed.extend(due)
        rows = conn.execute(
            select(c.id, c.state, meters.c.meter).join(meters, meters.c.pk == c.meter_pk)
            .where(meters.c.online.is_(True),
                   (and_(c.status == "queued", c.created_ms < now_ms - 2000)
                    | and_(c.status == "sent", c.sent_ms < now_ms - self.resend_ms)))
        ).all()
        return [self._publish(r.meter, r.id, r.state) for r in rows]
