# AquaFog meter entry point (MicroPython runs main.py after boot; the watchdog starts
# here, not in boot.py, so a board that keeps resetting can still be reached by mpremote).
import json
import sys

import aquameter
from aquameter.app import Meter, run
from aquameter.hal import Board


def load_config(path="config.json"):
    from aquameter import config
    with open(path) as f:
        cfg, errors = config.validate(json.load(f))
    for e in errors:
        print("config.json", e)
    if errors:
        raise SystemExit(1)
    # the validator runs once: unloading it gives its ~6 KB of bytecode back to the heap
    del sys.modules["aquameter.config"]
    if hasattr(aquameter, "config"):
        del aquameter.config
    return cfg


cfg = load_config()
board = Board(cfg)
meter = Meter(board, cfg)
meter.start()
run(meter, board, cfg)
