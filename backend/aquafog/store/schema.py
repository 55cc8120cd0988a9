"""Tables of the fog gateway's store (SQLAlchemy Core).

Readings are the big table: WITHOUT ROWID with primary key (meter, boot, seq), so the
dedupe key is the clustering key and one meter's history is contiguous on disk.
Everything the ranking and the meter pages read (latest state, per-day and per-month
consumption) is maintained incrementally by the ingest batch, never scanned out of
the readings.

SCHEMA_VERSION is stored in the file (PRAGMA user_version); store/engine.py upgrades a
file written by an older gateway. A new table needs nothing more (it is created on
open); a new column on an existing table also needs a step in engine.UPGRADES.
"""

from sqlalchemy import (BigInteger, Boolean, Column, ForeignKey, Index, Integer, MetaData, String, Table,
                        Text, UniqueConstraint)

from ..accounts import add_tables

SCHEMA_VERSION = 5  # 1: the first release (user_version was left at 0); 2: meter health; 3: policies; 4: accounts;
#                    5: alerts

metadata = MetaData()

meters = Table(
    "meters", metadata,
    Column("pk", Integer, primary_key=True),
    Column("meter", String(32), nullable=False, unique=True),
    Column("label", Text),
    Column("created_ms", BigInteger, nullable=False),
    # latest reading (the "head": newest by boot order then seq)
    Column("boot", String(8)),
    Column("boot_idx", Integer),
    Column("seq", Integer),
    Column("ts", BigInteger),
    Column("pulses", BigInteger),
    Column("ml", BigInteger),
    Column("flow_mlpm", Integer),
    Column("valve_reported", String(8)),
    Column("last_seen_ms", BigInteger),
    Column("total_ml", BigInteger, nullable=False, default=0),
    Column("readings", BigInteger, nullable=False, default=0),
    # availability (birth and last will)
    Column("online", Boolean),
    Column("status_boot", String(8)),
    Column("status_ms", BigInteger),
    Column("fw", String(32)),
    # operator intent, re-delivered to a meter that comes back in another state
    Column("valve_desired", String(8)),
)

meter_boots = Table(
    "meter_boots", metadata,
    Column("meter_pk", Integer, ForeignKey("meters.pk"), primary_key=True),
    Column("boot_idx", Integer, primary_key=True),
    Column("boot", String(8), nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    UniqueConstraint("meter_pk", "boot"),
    sqlite_with_rowid=False,
)

readings = Table(
    "readings", metadata,
    Column("meter_pk", Integer, primary_key=True),
    Column("boot_idx", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("ts", BigInteger, nullable=False),
    Column("pulses", BigInteger, nullable=False),
    Column("ml", BigInteger, nullable=False),
    Column("flow_mlpm", Integer, nullable=False),
    Column("valve", String(8), nullable=False),
    Column("rx_ms", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
Index("readings_by_time", readings.c.meter_pk, readings.c.ts)

# Keyed by the meter id (not the internal pk) so ties in a ranking break the same way
# at every fog and in the cloud: by consumption descending, then meter id ascending.
consumption_daily = Table(
    "consumption_daily", metadata,
    Column("meter", String(32), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("ml", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
Index("consumption_daily_rank", consumption_daily.c.day, consumption_daily.c.ml.desc(), consumption_daily.c.meter)

consumption_monthly = Table(
    "consumption_monthly", metadata,
    Column("meter", String(32), primary_key=True),
    Column("month", Integer, primary_key=True),
    Column("ml", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
Index("consumption_monthly_rank", consumption_monthly.c.month, consumption_monthly.c.ml.desc(),
      consumption_monthly.c.meter)

commands = Table(
    "commands", metadata,
    Column("id", String(64), primary_key=True),
    Column("meter_pk", Integer, ForeignKey("meters.pk"), nullable=False),
    Column("kind", String(16), nullable=False),           # "valve"
    Column("state", String(8), nullable=False),           # requested valve state
    Column("reason", Text),
    Column("origin", String(16), nullable=False),         # "api" | "cloud" | "reconcile" | "meter" | "policy"
    Column("status", String(10), nullable=False),         # queued|sent|applied|failed|expired
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_ms", BigInteger, nullable=False),
    Column("sent_ms", BigInteger),
    Column("done_ms", BigInteger),
    Column("expires_ms", BigInteger, nullable=False),
)
Index("commands_by_meter", commands.c.meter_pk, commands.c.created_ms)
Index("commands_open", commands.c.status, commands.c.expires_ms)

# The latest tele/health of each meter (one row per meter, replaced by each report).
meter_health = Table(
    "meter_health", metadata,
    Column("meter_pk", Integer, ForeignKey("meters.pk"), primary_key=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("boot", String(8), nullable=False),
    Column("fw", String(32), nullable=False),
    Column("uptime_s", BigInteger, nullable=False),
    Column("reset", String(16), nullable=False),
    Column("rssi", Integer),
    Column("heap_free", BigInteger, nullable=False),
    Column("dropped", BigInteger, nullable=False),
    Column("buffer", BigInteger, nullable=False),
    Column("clock", String(8), nullable=False),
    Column("alarms", String(64), nullable=False),         # comma-separated in protocol.ALARMS order; "" if none
)

# The alarms each meter's latest health lists, one row per (alarm, meter): the index
# behind GET /meters?alarm=, in meter order like the meter list itself.
meter_alarms = Table(
    "meter_alarms", metadata,
    Column("alarm", String(16), primary_key=True),
    Column("meter", String(32), primary_key=True),
    Column("since_ms", BigInteger, nullable=False),       # when the meter first reported it (this time)
    sqlite_with_rowid=False,
)

ingest_counters = Table(
    "ingest_counters", metadata,
    Column("reason", String(32), primary_key=True),
    Column("field", String(32), primary_key=True),        # "" when no single field is at fault
    Column("count", BigInteger, nullable=False),
    Column("last_ms", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# The most recent rejected messages, for an operator to look at (bounded).
ingest_rejects = Table(
    "ingest_rejects", metadata,
    Column("id", Integer, primary_key=True),
    Column("rx_ms", BigInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("field", String(32)),
    Column("message", Text, nullable=False),
    Column("payload", Text, nullable=False),              # first 200 bytes, escaped
)

# Policy settings (policy.py): the one row in force, and the config file's [policy] as last
# read, so an edited file wins over settings changed through the API, an unchanged one not.
policy_settings = Table(
    "policy_settings", metadata,
    Column("id", Integer, primary_key=True),              # always 1
    Column("settings", Text, nullable=False),             # JSON
    Column("source", String(8), nullable=False),          # "config" | "api"
    Column("from_config", Text, nullable=False),          # JSON of the config file's [policy]
    Column("updated_ms", BigInteger, nullable=False),
)

# Every automatic block, with the rule and the figures that triggered it. At most one per
# meter and period: a meter an operator re-opened stays open until the period is over.
policy_blocks = Table(
    "policy_blocks", metadata,
    Column("id", Integer, primary_key=True),
    Column("meter_pk", Integer, ForeignKey("meters.pk"), nullable=False),
    Column("period", String(8), nullable=False),          # "day" | "month"
    Column("period_key", String(10), nullable=False),     # 2026-11-26 | 2026-11
    Column("rule", String(8), nullable=False),            # "cap" | "mean": the first the meter broke
    Column("rules", Text, nullable=False),                # JSON [[rule, threshold_ml], ...]: all it broke
    Column("ml", BigInteger, nullable=False),             # the period's consumption at the block
    Column("threshold_ml", BigInteger, nullable=False),
    Column("mean_sum_ml", BigInteger),                    # the mean used, when the mean rule fired
    Column("mean_meters", BigInteger),
    Column("mean_source", String(8)),
    Column("mean_factor", Text),
    Column("command_id", String(64), nullable=False),     # the valve command that closed it
    Column("created_ms", BigInteger, nullable=False),
    Column("released_ms", BigInteger),
    Column("released_by", String(10)),                    # "rollover" | "operator" | "exempted"
    Column("release_command_id", String(64)),
    UniqueConstraint("meter_pk", "period", "period_key"),
)
Index("policy_blocks_active", policy_blocks.c.released_ms, policy_blocks.c.meter_pk)

# Alerts raised by the gateway (gateway/alerts.py): a meter's health alarms (leak, burst,
# valve_fault), a meter offline too long, an automatic policy block. At most one active
# (not cleared) alert per (meter, kind); cleared and acknowledged ones are pruned.
alerts = Table(
    "alerts", metadata,
    Column("id", Integer, primary_key=True),
    Column("meter", String(32), nullable=False),
    Column("kind", String(16), nullable=False),           # gateway/alerts.py KINDS
    Column("message", Text, nullable=False),              # what happened and what to do
    Column("raised_ms", BigInteger, nullable=False),
    Column("cleared_ms", BigInteger),                     # null while active
    Column("acked_ms", BigInteger),                       # null until an operator acknowledges it
    Column("acked_by", String(64)),                       # the operator's username
    Column("details", Text, nullable=False),              # JSON: the figures
)
Index("alerts_active", alerts.c.kind, alerts.c.meter, unique=True, sqlite_where=alerts.c.cleared_ms.is_(None))
Index("alerts_by_meter", alerts.c.meter, alerts.c.id)

# users, their meters, API tokens, the session key (accounts.py): the same tables as the cloud's
ACCOUNTS = add_tables(metadata)
