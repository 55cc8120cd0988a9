# AquaFog meter entry point (MicroPython runs main.py after boot).
import json

from aquameter import config
from aquameter.app import Meter
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
try:
    while True:
        board.sleep_ms(meter.step())
except KeyboardInterrupt:  # Ctrl-C at the REPL: stop cleanly, keep the register
    meter.shutdown()
except Exception as e:  # a bug: keep the register, then start over
    print("fatal:", repr(e))
    try:
        meter.shutdown()
    finally:
        board.reset()
