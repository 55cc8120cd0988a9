"""`aquafog gateway`: wires the receiver process, the writer, the publisher and the
HTTP API together, and stops them in the right order.

Processes and threads:
    receiver process   paho (persistent session, manual PUBACK) -> pipe -> core
    core: pipe reader  pipe -> writer queue
          writer       decode, account, commit, PUBACK, ack meters, command ledger
          publisher    paho loop of the outgoing connection
          cloudlink    partials, directory and cloud commands (with a region), its own connection
          alerts       offline alerts, alarm alerts brought in line at start, pruning (alerts.py)
          policy       evaluates and enforces the consumption policies (enforcer.py)
          http         waitress serving the Flask API (reads the store directly); http_threads
                       for requests plus live_max_clients for server-sent-event streams (live.py)
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import socket
import threading
import time

from waitress.server import create_server

from .. import __version__
from ..api import create_app
from ..config import GatewayConfig
from ..protocol import Topics
from ..process import stop_on_signals
from ..sdnotify import Notifier
from ..store.engine import open_engine
from .alerts import AlertMonitor
from .publisher import Publisher
from .receiver import ReceiverSettings, receiver_main
from .cloudlink import CloudLink
from .enforcer import Enforcer
from .live import LiveHub
from .writer import Writer

log = logging.getLogger("aquafog.gateway")



class Gateway:
    def __init__(self, cfg: GatewayConfig):
        self.cfg = cfg
        self.engine = open_engine(cfg.db_path)
        self.events: queue.Queue = queue.Queue()
        self.publisher = Publisher(cfg.mqtt_host, cfg.mqtt_port, cfg.mqtt_client_id + "-tx",
                                   cfg.mqtt_username, cfg.mqtt_password, self.events, tls=cfg.mqtt_tls)
        ctx = multiprocessing.get_context("spawn")
        self._rx_out, rx_in = ctx.Pipe(duplex=False)     # receiver -> core
        ack_out, self._ack_in = ctx.Pipe(duplex=False)   # core -> receiver
        settings = ReceiverSettings(
            host=cfg.mqtt_host, port=cfg.mqtt_port, client_id=cfg.mqtt_client_id,
            username=cfg.mqtt_username, password=cfg.mqtt_password,
            subscriptions=Topics(cfg.topic_root).subscriptions(), session_expiry_s=cfg.session_expiry_s,
            log_level=cfg.log_level, tls=cfg.mqtt_tls,
        )
        self.receiver = ctx.Process(target=receiver_main, args=(settings, rx_in, ack_out),
                                    name="aquafog-receiver", daemon=True)
        self.live_hub = LiveHub(cfg.live_max_clients)
        self.writer = Writer(cfg, self.engine, self.events, self.publisher, self._ack_in, live=self.live_hub)
        self.enforcer = Enforcer(cfg, self.engine, self.writer, self.city_mean)
        self.alert_monitor = AlertMonitor(cfg, self.engine, self.writer)
        self.cloudlink = CloudLink(cfg, self.engine, self.writer, health=self.health, api_url=self.api_url,
                                   policy=self.enforcer) if cfg.region else None
        self.app = create_app(cfg, self.engine, self)
        # each live stream holds a thread for as long as it is open: they get their own, so they
        # never starve the JSON API. A stream learns that its client left when its once-a-second
        # keep-alive fails (api/live.py), not through channel_request_lookahead, which made every
        # large answer slower (GET /ranking?n=1000: p99 10.5 ms with it, 5.4 ms without). A stream
        # whose client reads too slowly waits once 1 MiB is unsent (not 16), and its events are
        # dropped in the hub (each write leaves at once: send_bytes is 1 since waitress 1.3, and
        # since 2.1 the writing thread sends straight to the socket)
        self.http = create_server(self.app, host=cfg.http_host, port=cfg.http_port,
                                  threads=cfg.http_threads + cfg.live_max_clients,
                                  outbuf_high_watermark=1 << 20, ident="aquafog")
        self.started_at = time.time()
        self.done = threading.Event()
        self.systemd = Notifier()

    @property
    def http_port(self) -> int:
        return self.http.effective_port

    def api_url(self) -> str:
        """Where the cloud reaches this API (config api_url, else this server's address)."""
        if self.cfg.api_url:
            return self.cfg.api_url
        host = self.cfg.http_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        return f"http://{f'[{host}]' if ':' in host else host}:{self.http_port}"

    # GatewayServices ----------------------------------------------------------
    def submit_valve(self, meter, state, reason, command_id):
        return self.writer.submit_valve(meter, state, reason, command_id)

    def city_mean(self, period: str):
        """The newest city mean from the cloud (kept while the link is down), or None."""
        return None if self.cloudlink is None else self.cloudlink.city_mean.get(period)

    def alerts(self) -> AlertMonitor:
        return self.alert_monitor

    def policy(self) -> Enforcer:
        return self.enforcer

    def live(self) -> LiveHub:
        return self.live_hub

    def health(self) -> dict:
        s = self.writer.stats
        lat = sorted(s.batch_latency_ms)
        problems = []
        if s.rx_state != "connected":
            problems.append(f"receiver is {s.rx_state}: check the broker at {self.cfg.mqtt_host}:{self.cfg.mqtt_port}")
        if not self.publisher.connected:
            problems.append("publisher is not connected to the broker")
        if s.store_error:
            problems.append(s.store_error)
        if self.writer.fatal:
            problems.append(self.writer.fatal)
        if self.cloudlink is not None and self.cloudlink.last_error:
            problems.append(self.cloudlink.last_error)
        if self.enforcer.last_error:
            problems.append(self.enforcer.last_error)
        return {
            "status": "ok" if not problems else "degraded",
            "problems": problems,
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "mqtt": {"receiver": s.rx_state, "publisher": "connected" if self.publisher.connected else "disconnected"},
            "ingest": {
                "accepted": s.accepted, "duplicates": s.duplicates, "late": s.late, "register_resets": s.resets,
                "rejected": s.rejected, "batches": s.batches, "last_batch_messages": s.last_batch_rows,
                "last_commit_ms_ago": None if s.last_commit_ms is None else int(time.time() * 1000) - s.last_commit_ms,
                "batch_latency_ms_p50": lat[len(lat) // 2] if lat else None,
                "batch_latency_ms_max": lat[-1] if lat else None,
                "queue_depth": self.events.qsize(),
                # received, not yet on disk: neither PUBACKed to the broker nor acked to the meters
                "uncommitted": s.uncommitted,
                "uncommitted_age_ms": None if s.uncommitted_since_ms is None
                else max(0, int(time.time() * 1000) - s.uncommitted_since_ms),
            },
            "live": self.live_hub.stats(),
        }

    # lifecycle ---------------------------------------------------------------
    def _pipe_reader(self) -> None:
        try:
            while True:
                self.writer.deliver(self._rx_out.recv())
        except (EOFError, OSError):
            if not self.done.is_set():
                self.events.put(("rx", "dead"))

    def _serve(self) -> None:
        try:
            self.http.run()
        except (OSError, ValueError):  # stop() closed the listening socket under the loop's select()
            if not self.done.is_set():
                raise

    def start(self) -> "Gateway":
        self.receiver.start()
        self.publisher.start()
        self.writer.start()
        if self.cloudlink is not None:
            self.cloudlink.start()
        self.enforcer.start()
        self.alert_monitor.start()
        threading.Thread(target=self._pipe_reader, name="pipe-reader", daemon=True).start()
        threading.Thread(target=self._serve, name="http", daemon=True).start()
        log.info("AquaFog gateway %s: API on http://%s:%s/api/v1, broker %s:%s, store %s", __version__,
                 self.cfg.http_host, self.http_port, self.cfg.mqtt_host, self.cfg.mqtt_port, self.cfg.db_path)
        self.systemd.ready(f"API on {self.cfg.http_host}:{self.http_port}, broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port}")
        self.systemd.start_watchdog(self.hung)
        return self

    def hung(self) -> str | None:
        """Why the gateway no longer works, for systemd's watchdog (None: it works). The
        writer's loop turns at least once a second; a commit that takes long (a slow SD
        card) is allowed most of WatchdogSec."""
        limit = max(5.0, 0.75 * (self.systemd.watchdog_s or 20.0))
        age = time.monotonic() - self.writer.alive_at
        if self.writer.stopped.is_set():
            return "the writer thread has stopped"
        if age > limit:
            return f"the writer thread has not run for {age:.0f} s"
        return None

    def stop(self) -> None:
        if self.done.is_set():
            return
        self.done.set()
        self.systemd.stopping()
        log.info("stopping")
        self.live_hub.close()        # live streams end, freeing their threads
        self.http.task_dispatcher.shutdown(timeout=5)  # let running responses finish before the server closes
        self.http.close()
        if self.cloudlink is not None:
            self.cloudlink.stop()
        self.enforcer.stop()
        self.alert_monitor.stop()
        self.writer.stop()           # commits what it holds and PUBACKs it
        try:
            self._ack_in.send(("stop",))
        except OSError:
            pass
        self.receiver.join(5)
        if self.receiver.is_alive():
            self.receiver.terminate()
        self.publisher.stop()
        self.engine.dispose()

    def wait(self, stop: threading.Event | None = None) -> int:
        """Block until `stop` is set (by default: SIGINT or SIGTERM) or a fatal error; returns
        the exit code."""
        if stop is None:
            stop = stop_on_signals()
        while not stop.wait(0.5):
            if self.writer.stopped.is_set() or self.writer.fatal:
                break
        fatal = self.writer.fatal
        self.stop()
        if fatal:
            log.error("gateway stopped: %s", fatal)
            return 1
        return 0
