"""Run a fleet of emulated meters against a broker until Ctrl-C.

    python tools/emulator --broker 127.0.0.1:1883 --meters 200 --prefix m --seed 1 --speed 60
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/emulator`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "emulator"

from emulator.fleet import Fleet, meter_ids  # noqa: E402


def parse_broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:1883, got %r" % text)
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/emulator", description=(
        "Run N AquaFog meters (the real firmware on CPython) against an MQTT broker until Ctrl-C."))
    p.add_argument("--broker", type=parse_broker, default=("127.0.0.1", 1883), help="HOST:PORT (default 127.0.0.1:1883)")
    p.add_argument("--meters", type=int, default=200, help="how many meters (default 200)")
    p.add_argument("--prefix", default="m", help="meter id prefix: m -> m0001, m0002, ... (default m)")
    p.add_argument("--seed", type=int, default=1, help="water-use seed (default 1)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    p.add_argument("--start", "--start-epoch", dest="start_epoch", type=float, default=None,
                   help="simulated start, Unix seconds; the clock runs at --speed until it reaches real now, "
                        "then at real time (default: --horizon real seconds of fast replay)")
    p.add_argument("--horizon", type=float, default=3600.0,
                   help="with no --start: real seconds of fast replay before reaching real now (default 3600)")
    p.add_argument("--report-interval", type=int, default=60, help="seconds between readings (default 60)")
    p.add_argument("--k-factor", type=float, default=450, help="sensor pulses per litre (default 450)")
    p.add_argument("--duplicate-prob", type=float, default=0.0, help="probability of publishing a message twice")
    p.add_argument("--topic-root", default="aquafog")
    p.add_argument("--password", default="",
                   help="MQTT password for every meter; '{id}' is replaced by the meter id (default: none)")
    p.add_argument("--state-dir", "--fs-root", dest="fs_root", default=None,
                   help="directory for the meters' flash files, one folder per meter; reused, a restarted "
                        "fleet continues its registers (default: a temporary directory)")
    p.add_argument("--status-every", type=float, default=10.0, help="real seconds between status lines (0: never)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.meters < 1:
        p.error("--meters must be >= 1")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    host, port = args.broker
    ids = meter_ids(args.meters, args.prefix)
    password = (lambda mid: args.password.replace("{id}", mid)) if "{id}" in args.password else args.password
    fleet = Fleet(host, port, ids, seed=args.seed, speed=args.speed, start_epoch=args.start_epoch,
                  report_interval_s=args.report_interval, duplicate_prob=args.duplicate_prob,
                  k_factor=args.k_factor, topic_root=args.topic_root, fs_root=args.fs_root,
                  mqtt_password=password, horizon_s=args.horizon)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print("emulator: %d meters (%s..%s) -> %s:%d, speed x%g, simulated start %s" % (
        len(ids), ids[0], ids[-1], host, port, args.speed,
        datetime.fromtimestamp(fleet.clock.start_epoch, timezone.utc).isoformat(timespec="seconds")), flush=True)
    leak = [m.id for m in fleet.meters if m.profile.kind == "leak"]
    heavy = [m.id for m in fleet.meters if m.profile.kind == "heavy"]
    print("emulator: leaking meter %s; heavy users %s" % (", ".join(leak) or "-", ", ".join(heavy) or "-"), flush=True)
    fleet.start()
    try:
        while not stop.wait(args.status_every if args.status_every > 0 else 3600):
            if args.status_every > 0:
                s = fleet.stats()
                print("emulator: %s %s online %d/%d readings %d outbox %d lag %.3fs errors %d" % (
                    "live" if fleet.clock.live else "replay",
                    datetime.fromtimestamp(s["sim_time"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                    s["online"], s["meters"], s["readings_sent"], s["outbox"], s["max_lag_s"], s["errors"]),
                    flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        print("emulator: stopping (graceful shutdown of every meter)", flush=True)
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
