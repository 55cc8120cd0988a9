"""The fog's partials for the cloud (federation.py has the format and why it is exact).

Every `summary_interval_ms` the summarizer reads the incrementally kept per-day and
per-month totals (never the readings) and, for today and this month, publishes the
partial on the fog's own broker, retained at QoS 1, when it changed. The Mosquitto
bridge (bridge.py) carries it to the cloud; while the link is down the bridge queues
it, and the retained copy is what a cloud that comes back finds. Only with a `region`.
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ..bridge import fog_summary_topic
from ..config import GatewayConfig
from ..federation import Partial, encode_partial, period_key
from ..periods import Calendar
from ..store import queries
from ..store.schema import consumption_daily, consumption_monthly, meters

log = logging.getLogger("aquafog.summary")

def compute(conn, cfg: GatewayConfig, calendar: Calendar, now: float, seq: int) -> list[Partial]:
    """Today's and this month's partials of this fog."""
    day, month = calendar.keys(int(now))
    n_meters = conn.execute(select(func.count()).select_from(meters)).scalar_one()
    out = []
    for period, table, col, key, rank in (
            ("day", consumption_daily, consumption_daily.c.day, day, queries.ranking_day),
            ("month", consumption_monthly, consumption_monthly.c.month, month, queries.ranking_month)):
        total = conn.execute(select(func.coalesce(func.sum(table.c.ml), 0)).where(col == key)).scalar_one()
        top = tuple((m, int(ml)) for m, ml in rank(conn, key, cfg.summary_top_k))
        out.append(Partial(cfg.region, period, period_key(period, day), seq, int(now * 1000), n_meters, int(total),
                           cfg.summary_top_k, top))
    return out


class Summarizer:
    def __init__(self, cfg: GatewayConfig, engine: Engine, clock=time.time):
        self.cfg = cfg
        self.engine = engine
        self.clock = clock
        self.calendar = Calendar(cfg.timezone)
        self.seq = 0
        self.published = 0
        self.last_error: str | None = None
        self._last: dict[str, tuple] = {}  # period -> content last published (without seq/ts)
        self._stop = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.mqtt_client_id + "-summary",
                        protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.mqtt_username:
            c.username_pw_set(cfg.mqtt_username, cfg.mqtt_password or None)
        c.reconnect_delay_set(0.2, 5)
        self.client = c
        self._thread = threading.Thread(target=self._run, name="summary", daemon=True)

    def start(self) -> "Summarizer":
        self.client.connect_async(self.cfg.mqtt_host, self.cfg.mqtt_port, keepalive=30)
        self.client.loop_start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def tick(self) -> int:
        """Publish what changed; returns how many partials went out."""
        now = self.clock()
        self.seq = max(self.seq + 1, int(now * 1000))  # grows across restarts too
        with self.engine.connect() as conn:
            partials = compute(conn, self.cfg, self.calendar, now, self.seq)
        sent = 0
        for p in partials:
            content = (p.key, p.meters, p.sum_ml, p.k, p.top)
            if self._last.get(p.period) == content or not self.client.is_connected():
                continue
            info = self.client.publish(fog_summary_topic(p.period, p.key), encode_partial(p),
                                       qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._last[p.period] = content
                self.published += 1
                sent += 1
        return sent

    def _run(self) -> None:
        interval = self.cfg.summary_interval_ms / 1000
        while not self._stop.wait(interval):
            try:
                self.tick()
                self.last_error = None
            except Exception as exc:  # the store busy or gone: try again next interval
                if self.last_error is None:
                    log.exception("summary failed; retrying every %.1f s", interval)
                self.last_error = f"summary failed: {exc}"
