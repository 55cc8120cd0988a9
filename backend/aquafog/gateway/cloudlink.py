"""The fog's side of the city (only with a `region`): one MQTT connection to the fog's own
broker, whose bridge (bridge.py) carries aquafog-fog/summary/# up to the cloud and the
cloud's aquafog-fog/cmnd/# down. Every `summary_interval_ms`, and only what changed:

- the partials of today and this month (summary.py), retained, QoS 1;
- the directory of the fog's registered meters (federation.DirectoryChunk), retained;
- the ledger status of every command the cloud routed here, QoS 1 (not retained);
- the fog's info (its API URL, for meter detail through the cloud, and its health),
  retained, when it changes and every INFO_EVERY_S.

Down the link come valve commands, the city mean (kept as the last known one while the
link is down; GET /api/v1/city/mean on the fog) and the city's policy settings (handed to
the enforcer, which adopts them unless the fog's own changed later).

A valve command from the cloud goes into the fog's own ledger (origin "cloud"), with the
same semantics as one from the fog's API: applied only when the meter confirms. One that
expired while the link was down is answered "expired" and never sent to the meter.
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from ..bridge import fog_city_filter, fog_city_topic, fog_command_filter, fog_command_topic, fog_summary_topic
from ..config import GatewayConfig
from .. import __version__
from ..federation import (DIRECTORY_CHUNK, CityMean, CloudCommand, CommandStatus, DirectoryChunk, FogInfo,
                          decode_city_mean, decode_city_policy, decode_command, encode_directory, encode_info,
                          encode_partial, encode_status)
from ..periods import Calendar
from ..protocol import Reject
from ..store import queries
from ..store.schema import meters
from ..tls import apply_client_tls
from .commands import CommandError
from .summary import compute

log = logging.getLogger("aquafog.cloudlink")

DONE = ("applied", "failed", "expired", "rejected")
INFO_EVERY_S = 60.0


class CloudLink:
    def __init__(self, cfg: GatewayConfig, engine, writer, clock=time.time, health=None, api_url=None,
                 policy=None):
        self.cfg = cfg
        self.policy = policy            # the enforcer: takes the city's settings, summarises its own
        self.health = health            # () -> the gateway's /health body
        self.api_url = api_url          # () -> where the cloud reaches this fog's API
        self._info: tuple | None = None  # (content, when) of the info last published
        self.engine = engine
        self.writer = writer
        self.clock = clock
        self.calendar = Calendar(cfg.timezone)
        self.seq = 0
        self.published = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._last: dict[str, tuple] = {}  # period -> partial content last published (without seq/ts)
        self._directory: tuple[int, int] | None = None  # (meters, max pk) last published
        self._commands: dict[str, tuple[str, str, str | None]] = {}  # cloud command id -> (meter, status, error) sent
        self._inbox: list[bytes] = []
        self.city_mean: dict[str, CityMean] = {}  # period -> the newest city mean the cloud sent
        self._lock = threading.Lock()
        self._stop = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.mqtt_client_id + "-cloudlink",
                        protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.mqtt_username:
            c.username_pw_set(cfg.mqtt_username, cfg.mqtt_password or None)
        apply_client_tls(c, cfg.mqtt_tls)
        c.reconnect_delay_set(0.2, 5)
        c.on_connect = lambda cl, *_: cl.subscribe([(fog_command_filter(), 1), (fog_city_filter(), 1)])
        c.on_message = self._on_message
        self.client = c
        self._thread = threading.Thread(target=self._run, name="cloudlink", daemon=True)

    def start(self) -> "CloudLink":
        self.client.connect_async(self.cfg.mqtt_host, self.cfg.mqtt_port, keepalive=30)
        self.client.loop_start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _c, _u, msg) -> None:
        if msg.topic == fog_command_topic("valve"):
            with self._lock:
                self._inbox.append(msg.payload)
            return
        if msg.topic == fog_city_topic("policy"):
            p = decode_city_policy(msg.payload)
            if isinstance(p, Reject):
                self.rejected += 1
                log.warning("city policy rejected (%s, field %s): %s", p.reason, p.field, p.message)
            elif self.policy is not None:
                self.policy.offer_city(p)
            return
        for period in ("day", "month"):
            if msg.topic == fog_city_topic("mean", period):
                m = decode_city_mean(msg.payload)
                if isinstance(m, CityMean) and m.period == period:
                    old = self.city_mean.get(period)
                    if old is None or (m.key, m.ts_ms) >= (old.key, old.ts_ms):
                        self.city_mean[period] = m  # kept while the link is down: the last known mean
                    return
        self.rejected += 1

    def _publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        if not self.client.is_connected():
            return False
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.published += 1
        return True

    # --- commands from the cloud -----------------------------------------------------------------
    def _take_commands(self) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for payload in inbox:
            c = decode_command(payload)
            if isinstance(c, Reject):
                self.rejected += 1
                log.warning("cloud command rejected (%s, field %s): %s", c.reason, c.field, c.message)
                continue
            self._submit(c)

    def _submit(self, c: CloudCommand) -> None:
        if c.expires_ms <= int(self.clock() * 1000):  # queued by the bridge past its life
            self._status(c.id, c.meter, c.state, "expired", "the command expired before it reached this fog")
            return
        try:
            self.writer.submit_valve(c.meter, c.state, c.reason or "from the cloud", c.id, origin="cloud")
        except CommandError as exc:  # unknown meter here, or the id reused for something else
            self._status(c.id, c.meter, c.state, "rejected", exc.message)
            return
        self._commands.setdefault(c.id, (c.meter, "", None))

    def _status(self, cid: str, meter: str, state: str, status: str, error: str | None) -> None:
        s = CommandStatus(self.cfg.region, cid, meter, state, status, error)
        if self._publish(fog_summary_topic("command", cid), encode_status(s), retain=False):
            self._commands[cid] = (meter, status, error)

    def _report_commands(self, conn) -> None:
        for cid, (meter, sent, err) in list(self._commands.items()):
            row = queries.get_command(conn, cid)
            if row is None:
                continue
            if (row["status"], row["error"]) != (sent, err):
                self._status(cid, meter, row["state"], row["status"], row["error"])
            if row["status"] in DONE and self._commands[cid][1] == row["status"]:
                del self._commands[cid]  # its final status is out

    # --- partials and directory ------------------------------------------------------------------
    def _report_directory(self, conn) -> None:
        count, top_pk = conn.execute(select(func.count(), func.max(meters.c.pk))).one()
        if self._directory == (count, top_pk):
            return
        ids = [m for (m,) in conn.execute(select(meters.c.meter).order_by(meters.c.meter))]
        chunks = [ids[i:i + DIRECTORY_CHUNK] for i in range(0, len(ids), DIRECTORY_CHUNK)] or [[]]
        ok = True
        for i, part in enumerate(chunks):
            d = DirectoryChunk(self.cfg.region, self.seq, i, len(chunks), tuple(part))
            ok = self._publish(fog_summary_topic("directory", str(i)), encode_directory(d), retain=True) and ok
        if ok:
            self._directory = (count, top_pk)

    def _report_info(self, now: float) -> None:
        if self.health is None:
            return
        h = self.health()
        policy = self.policy.summary() if self.policy is not None else None
        content = (self.api_url() if self.api_url else "", h["status"], tuple(h["problems"][:20]),
                   tuple(sorted(policy.items())) if policy else None)
        if self._info is not None and self._info[0] == content and now - self._info[1] < INFO_EVERY_S:
            return
        info = FogInfo(self.cfg.region, content[0], __version__, content[1], content[2], int(now * 1000), policy)
        if self._publish(fog_summary_topic("info", "fog"), encode_info(info), retain=True):
            self._info = (content, now)

    def tick(self) -> None:
        now = self.clock()
        self.seq = max(self.seq + 1, int(now * 1000))  # grows across restarts too
        self._take_commands()
        with self.engine.connect() as conn:
            partials = compute(conn, self.cfg, self.calendar, now, self.seq)
            self._report_directory(conn)
            self._report_commands(conn)
        self._report_info(now)
        for p in partials:
            content = (p.key, p.meters, p.sum_ml, p.k, p.top)
            if self._last.get(p.period) != content and self._publish(
                    fog_summary_topic(p.period, p.key), encode_partial(p), retain=True):
                self._last[p.period] = content

    def _run(self) -> None:
        interval = self.cfg.summary_interval_ms / 1000
        while not self._stop.wait(interval):
            try:
                self.tick()
                self.last_error = None
            except Exception as exc:  # the store busy or gone: try again next interval
                if self.last_error is None:
                    log.exception("cloud link failed; retrying every %.1f s", interval)
                self.last_error = f"cloud link failed: {exc}"
