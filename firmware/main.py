# AquaFog meter entry point (MicroPython runs main.py after boot; the watchdog starts
# here, not in boot.py, so a board that keeps resetting can still be reached by mpremote).
import json

from aquameter import config
from aquameter.app import Meter, run
from aquameter.hal import Board


def load_config(path="config.json"):
    with open(path) as f:
        cfg, errors = config.validate(json.load(f))
    for e in errors:
        print("config.json", e)
    if errors:
        raise SystemExit(1)
    return cfg


cfg = load_config()
board = Board(cfg)
meter = Meter(board, cfg)
meter.start()
run(meter, board, cfg)
