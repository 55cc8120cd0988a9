"""systemd's service notification protocol (sd_notify), without a library: READY=1 once
a service is up, STOPPING=1 when it stops, and watchdog keep-alives (WATCHDOG=1) sent
only while the service's own liveness check passes, so that a hung process (its
writer stuck, or the whole process stopped) is killed and restarted by systemd.

Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Callable

log = logging.getLogger("aquafog.sdnotify")


def under_systemd(env=os.environ) -> bool:
    """True when stdout goes to the journal (it stamps time and unit itself)."""
    return bool(env.get("JOURNAL_STREAM"))


class Notifier:
    def __init__(self, env=os.environ):
        self.path = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_s: float | None = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000
        self._stop = threading.Event()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def send(self, *lines: str) -> bool:
        if self.path is None:
            return False
        addr = "\0" + self.path[1:] if self.path.startswith("@") else self.path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(addr)
                s.sendall("\n".join(lines).encode())
            return True
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.path, exc)
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self._stop.set()
        self.send("STOPPING=1")

    def start_watchdog(self, alive: Callable[[], str | None]) -> threading.Thread | None:
        """Ping systemd's watchdog twice per WatchdogSec while alive() returns None; when it
        returns a reason, stop pinging (and say why once): systemd then restarts us."""
        if self.watchdog_s is None or self.path is None:
            return None
        interval = self.watchdog_s / 2

        def run() -> None:
            said = None
            while not self._stop.wait(interval):
                why = alive()
                if why is None:
                    self.send("WATCHDOG=1")
                    said = None
                elif why != said:
                    said = why
                    log.error("not telling systemd's watchdog we are alive: %s; it restarts the service after "
                              "WatchdogSec=%gs unless this clears", why, self.watchdog_s)
                    self.status(f"hung: {why}")

        t = threading.Thread(target=run, name="sd-watchdog", daemon=True)
        t.start()
        return t
