"""`aquafog cloud`: receives the fogs' partials from the cloud broker (where the fogs'
Mosquitto bridges deliver them), stores the newest of each fog and period, and serves the
city-wide answers over HTTP.

Threads:
    paho        the subscriber's network loop (persistent session, QoS 1): only queues
    worker      decode, store (commit), update the in-memory view
    http        waitress serving the Flask API (reads the view, never the broker)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from waitress.server import create_server

from .. import __version__
from ..bridge import cloud_summary_filter, parse_cloud_summary_topic
from ..config import CloudConfig
from ..bridge import city_topic, cloud_command_topic
from ..federation import (CityMean, CityPolicy, CloudCommand, FogInfo, decode_directory, decode_info,
                          decode_partial, decode_status, encode_city_mean, encode_city_policy, encode_command)
from ..policy import PolicySettings
from ..protocol import Reject
from ..process import stop_on_signals
from ..sdnotify import Notifier
from ..tls import apply_client_tls
from . import RoutingError
from .api import create_cloud_app
from .store import (cloud_commands, load_city_policy, load_directory, load_partials, open_cloud_engine,
                    replace_region_directory, save_city_policy, save_partial)
from .view import CityView

log = logging.getLogger("aquafog.cloud")


def parse_summary_topic(topic: str) -> tuple[str, str, str] | None:
    """(region, kind, name) of aquafog-city/fogs/<region>/summary/<kind>/<name>: kind is a
    period (day, month; name its key), "directory" (name the chunk) or "command" (its id)."""
    try:
        region, levels = parse_cloud_summary_topic(topic)
    except ValueError:
        return None
    return (region, levels[0], levels[1]) if len(levels) == 2 else None


class Cloud:
    def __init__(self, cfg: CloudConfig):
        self.cfg = cfg
        self.engine = open_cloud_engine(cfg.db_url)
        self.view = CityView()
        with self.engine.connect() as conn:
            for p in load_partials(conn):  # a restarted cloud answers at once
                self.view.put(p)
            self.directory: dict[str, str] = load_directory(conn)  # meter -> region
            self.policy: CityPolicy | None = load_city_policy(conn)
        self._chunks: dict[str, tuple[int, dict[int, tuple[str, ...]]]] = {}  # region -> (seq, chunks so far)
        self.fogs: dict[str, tuple[FogInfo, int]] = {}  # region -> (newest info, received_ms)
        self.inbox: queue.Queue = queue.Queue()
        self.accepted = 0
        self.stale = 0
        self.rejected: Counter = Counter()
        self.store_error: str | None = None
        self.lock = threading.Lock()
        self.subscribed = threading.Event()  # the fogs' summaries are coming in
        self._broadcast: dict[str, tuple] = {}  # period -> (key, sum, meters) last sent to the fogs
        self.started_at = time.time()
        self.done = threading.Event()
        self.systemd = Notifier()
        self.alive_at = time.monotonic()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.mqtt_client_id, protocol=mqtt.MQTTv5)
        if cfg.mqtt_username:
            c.username_pw_set(cfg.mqtt_username, cfg.mqtt_password or None)
        apply_client_tls(c, cfg.mqtt_tls)
        c.reconnect_delay_set(0.2, 5)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.on_message = lambda _c, _u, msg: self.inbox.put((msg.topic, msg.payload))
        self.client = c
        self.app = create_cloud_app(cfg, self)
        # live relays hold a thread each, on top of the API's; a relay learns that its tab was
        # closed when it passes on the fog's once-a-second keep-alive (gateway/service.py: why
        # not channel_request_lookahead)
        self.http = create_server(self.app, host=cfg.http_host, port=cfg.http_port,
                                  threads=cfg.http_threads + cfg.live_max_clients,
                                  outbuf_high_watermark=1 << 20, ident="aquafog-cloud")

    @property
    def http_port(self) -> int:
        return self.http.effective_port

    def _on_connect(self, client, _u, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log.error("the cloud broker refused the connection: %s", reason_code)
            return
        self.subscribed.clear()
        client.subscribe(cloud_summary_filter(), qos=1)
        if self.policy is not None:  # again: a broker without persistence may have lost the retained copy
            self._publish_policy(self.policy)

    # --- ingest ---------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> None:
        where = parse_summary_topic(topic)
        if where is None:
            self._reject(Reject("bad_topic", "topic", f"not a fog summary topic: {topic[:120]!r}"))
            return
        if not payload:
            return  # a retained partial cleared by its fog
        if where[1] == "directory":
            self._directory_chunk(where[0], payload)
            return
        if where[1] == "command":
            self._command_status(where[0], where[2], payload)
            return
        if where[1:] == ("info", "fog"):
            info = decode_info(payload, where[0])
            if isinstance(info, Reject):
                self._reject(info, topic)
                return
            old = self.fogs.get(info.region)
            if old is None or info.ts_ms >= old[0].ts_ms:
                self.fogs[info.region] = (info, int(time.time() * 1000))
            self.view.regions.setdefault(info.region, 0)
            return
        p = decode_partial(payload, where[0])
        if isinstance(p, Reject):
            self._reject(p, topic)
            return
        if (p.period, p.key) != where[1:]:
            self._reject(Reject("topic_mismatch", "key", f"{p.period}/{p.key} arrived on {topic!r}"), topic)
            return
        try:
            with self.engine.begin() as conn:
                save_partial(conn, p, int(time.time() * 1000))
            self.store_error = None
        except Exception as exc:  # the database is down: keep serving from memory, retry later
            if self.store_error is None:
                log.exception("storing a partial failed")
            self.store_error = f"store write failed: {exc}"
        if self.view.put(p):
            self.accepted += 1
            self._broadcast_mean(p.period, p.key)
        else:
            self.stale += 1

    def _broadcast_mean(self, period: str, key: str) -> None:
        """The city mean for every fog (retained): their policies compare with it."""
        total, count, parts = self.view.mean(period, key)
        figure = (key, total, count)
        if self._broadcast.get(period) == figure:
            return
        m = CityMean(period, key, count, total, tuple(p.region for p in parts), int(time.time() * 1000))
        info = self.client.publish(city_topic("mean", period), encode_city_mean(m), qos=1, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._broadcast[period] = figure

    def _directory_chunk(self, region: str, payload: bytes) -> None:
        d = decode_directory(payload, region)
        if isinstance(d, Reject):
            self._reject(d)
            return
        seq, chunks = self._chunks.get(region, (-1, {}))
        if d.seq < seq:
            self.stale += 1
            return
        if d.seq > seq:
            seq, chunks = d.seq, {}
        chunks[d.chunk] = d.meters
        self._chunks[region] = (seq, chunks)
        if len(chunks) < d.chunks:
            return  # the rest of this version is on its way
        members = [m for i in range(d.chunks) for m in chunks.get(i, ())]
        with self.engine.begin() as conn:
            replace_region_directory(conn, region, members)
        with self.lock:
            for m in [m for m, r in self.directory.items() if r == region]:
                del self.directory[m]
            for m in members:
                self.directory[m] = region
        self.view.regions.setdefault(region, 0)

    def _command_status(self, region: str, cid: str, payload: bytes) -> None:
        s = decode_status(payload, region)
        if isinstance(s, Reject):
            self._reject(s)
            return
        c = cloud_commands.c
        with self.engine.begin() as conn:
            n = conn.execute(cloud_commands.update().where(c.id == s.id, c.region == region).values(
                status=s.status, error=s.error, updated_ms=int(time.time() * 1000))).rowcount
        if not n:
            self._reject(Reject("unknown_command", "id", f"no command {s.id!r} was routed to {region!r}"))

    # --- commands to a fog -----------------------------------------------------------------
    def route_valve(self, meter: str, state: str, reason: str | None, command_id: str | None) -> tuple[dict, bool]:
        """Record the command and publish it to the owning fog; (command, created)."""
        region = self.directory.get(meter)
        if region is None:
            raise RoutingError(404, "not_found", f"meter {meter!r} is in no fog's directory: check the id, or that "
                                                 "its fog is registered and has reported (GET /api/v1/fogs)")
        c = cloud_commands.c
        now = int(time.time() * 1000)
        cid = command_id or f"c-{now:x}-{meter}"
        with self.engine.begin() as conn:
            old = conn.execute(cloud_commands.select().where(c.id == cid)).mappings().first()
            if old is not None:
                if (old["meter"], old["state"]) != (meter, state):
                    raise RoutingError(409, "conflict", f"command_id {cid!r} was already used for meter "
                                                        f"{old['meter']} ({old['state']})", "command_id")
                return dict(old), False
            row = {"id": cid, "meter": meter, "region": region, "state": state, "reason": reason,
                   "status": "routed", "error": None, "created_ms": now, "updated_ms": now,
                   "expires_ms": now + self.cfg.command_ttl_s * 1000}
            conn.execute(cloud_commands.insert().values(**row))
        info = self.client.publish(cloud_command_topic(region, "valve"), encode_command(
            CloudCommand(cid, meter, state, reason, row["expires_ms"])), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self.engine.begin() as conn:
                conn.execute(cloud_commands.update().where(c.id == cid).values(
                    status="failed", error="the cloud broker is unreachable", updated_ms=now))
            raise RoutingError(503, "unavailable", "the cloud broker is unreachable: the command was not sent; "
                                                   "retry when GET /api/v1/health is ok")
        return row, True

    def set_policy(self, settings: PolicySettings) -> tuple[CityPolicy, bool]:
        """The city's policy settings: stored, and sent to every fog (retained); (policy, sent?).
        Not sent now: it goes out when the cloud broker is back."""
        ts = max(int(time.time() * 1000), self.policy.ts_ms + 1 if self.policy else 0)
        p = CityPolicy(settings, ts)
        with self.engine.begin() as conn:
            save_city_policy(conn, p)
        self.policy = p
        log.info("city policy set: %s", settings.to_json())
        return p, self._publish_policy(p)

    def _publish_policy(self, p: CityPolicy) -> bool:
        info = self.client.publish(city_topic("policy"), encode_city_policy(p), qos=1, retain=True)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def owner(self, meter: str) -> tuple[str, str]:
        """(region, api_url) of the fog that owns `meter`, for meter detail; RoutingError if none."""
        region = self.directory.get(meter)
        if region is None:
            raise RoutingError(404, "not_found", f"meter {meter!r} is in no fog's directory: check the id, or that "
                                                 "its fog is registered and has reported (GET /api/v1/fogs)")
        info = self.fogs.get(region)
        if info is None or not info[0].api_url:
            raise RoutingError(503, "unavailable", f"meter {meter!r} is at fog {region!r}, which has not announced "
                                                   "where its API is: check its cloud link, or set api_url in its "
                                                   "config")
        return region, info[0].api_url

    def command(self, cid: str) -> dict | None:
        with self.engine.connect() as conn:
            r = conn.execute(cloud_commands.select().where(cloud_commands.c.id == cid)).mappings().first()
        return None if r is None else dict(r)

    def _reject(self, r: Reject, topic: str = "") -> None:
        self.rejected[r.reason] += 1
        log.warning("partial rejected (%s, field %s): %s %s", r.reason, r.field, r.message, topic)

    def _work(self) -> None:
        while True:
            self.alive_at = time.monotonic()
            try:
                item = self.inbox.get(timeout=1.0)
            except queue.Empty:
                continue
            if item is None:
                return
            try:
                self.handle(*item)
            except Exception:  # never let one message stop the cloud
                log.exception("a partial could not be handled")
                self.rejected["internal_error"] += 1

    # --- lifecycle -------------------------------------------------------------------------
    def health(self) -> dict:
        problems = []
        if not self.client.is_connected():
            problems.append(f"not connected to the cloud broker at {self.cfg.mqtt_host}:{self.cfg.mqtt_port}")
        if self.store_error:
            problems.append(self.store_error)
        return {"status": "ok" if not problems else "degraded", "problems": problems, "version": __version__,
                "uptime_s": round(time.time() - self.started_at, 1),
                "partials": {"accepted": self.accepted, "stale": self.stale, "rejected": dict(self.rejected),
                             "queue_depth": self.inbox.qsize()}}

    def start(self) -> "Cloud":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self.client.connect_async(self.cfg.mqtt_host, self.cfg.mqtt_port, keepalive=30, clean_start=False,
                                  properties=props)
        self.client.loop_start()
        threading.Thread(target=self._work, name="cloud-worker", daemon=True).start()
        threading.Thread(target=self._serve, name="http", daemon=True).start()
        log.info("AquaFog cloud %s: API on http://%s:%s/api/v1, broker %s:%s, store %s", __version__,
                 self.cfg.http_host, self.http_port, self.cfg.mqtt_host, self.cfg.mqtt_port,
                 self.engine.url.render_as_string(hide_password=True))
        self.systemd.ready(f"API on {self.cfg.http_host}:{self.http_port}")
        self.systemd.start_watchdog(self.hung)
        return self

    def hung(self) -> str | None:
        """Why the cloud no longer works, for systemd's watchdog (None: it works): its worker
        turns at least once a second."""
        age = time.monotonic() - self.alive_at
        limit = max(5.0, 0.75 * (self.systemd.watchdog_s or 20.0))
        return f"the partials worker has not run for {age:.0f} s" if age > limit else None

    def _serve(self) -> None:
        try:
            self.http.run()
        except OSError:  # stop() closed the listening socket under the loop's select()
            if not self.done.is_set():
                raise

    def stop(self) -> None:
        if self.done.is_set():
            return
        self.done.set()
        self.systemd.stopping()
        self.http.close()
        self.client.disconnect()
        self.client.loop_stop()
        self.inbox.put(None)
        self.engine.dispose()

    def wait(self, stop: threading.Event | None = None) -> int:
        """Block until `stop` is set (by default: SIGINT or SIGTERM)."""
        if stop is None:
            stop = stop_on_signals()
        stop.wait()
        self.stop()
        return 0
