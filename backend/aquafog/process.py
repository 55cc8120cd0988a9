"""Settings of a long-running AquaFog service process (the gateway, the cloud)."""

from __future__ import annotations

import gc
import signal
import threading


def quiet_gc() -> None:
    """Keep the cycle collector's full passes off the request path: what exists once a service
    has started (modules, the app, caches) lives as long as the process, so it is frozen out
    of every collection, and the young generation is collected less often (a top-1000 answer
    makes thousands of short-lived objects). Call it at the end of start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def stop_on_signals() -> threading.Event:
    """An event that SIGINT or SIGTERM sets. Installed before a service starts, so that a
    SIGTERM arriving while it starts up (systemd stopping it, a test done with it) stops
    it cleanly instead of killing it."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
