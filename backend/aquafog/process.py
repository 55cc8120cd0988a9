"""Settings of a long-running AquaFog service process (the gateway, the cloud)."""

from __future__ import annotations

import gc


def quiet_gc() -> None:
    """Keep the cycle collector's full passes off the request path: what exists once a service
    has started (modules, the app, caches) lives as long as the process, so it is frozen out
    of every collection, and the young generation is collected less often (a top-1000 answer
    makes thousands of short-lived objects). Call it at the end of start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
