"""Run a fleet of emulated meters against a broker until Ctrl-C or SIGTERM.

    python tools/emulator --broker 127.0.0.1:1883 --meters 200 --prefix m --seed 1 --speed 60
    python tools/emulator --meters-dir firmware/meters [--ids m0001,m0002] [--broker 127.0.0.1:1883]
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
from emulator.meters_dir import MetersDirError  # noqa: E402

EXIT_USAGE = 2  # argparse's own code for a bad command line; also a meters folder that cannot run

# flags that describe invented meters: (dest, flag, default, the config.json key that replaces it)
INVENTED = (
    ("meters", "--meters", 200, None),
    ("prefix", "--prefix", "m", "meter_id"),
    ("report_interval", "--report-interval", 60, "report_interval_s"),
    ("k_factor", "--k-factor", 450.0, "k_factor"),
    ("topic_root", "--topic-root", "aquafog", "topic_root"),
    ("password", "--password", "", "mqtt_password"),
)

METERS_DIR_HELP = """\
Provisioned meters (--meters-dir): each meter runs with its own config.json, as the
provisioning tool wrote it and a board would read it (meter_id, mqtt_user,
mqtt_password, topic_root, k_factor, report_interval_s, pins, TLS ...), with the files
it names for MQTT over TLS (mqtt_cafile, mqtt_certfile, mqtt_keyfile) copied to its
emulated flash as `make flash` copies them. What the emulator overrides, and why:
  mqtt_keepalive_s   0: paho keeps each TCP link alive on real time (a keepalive in
                     simulated seconds would be a few real milliseconds)
  broker_host/port   with --broker only (e.g. a meter provisioned for 192.168.1.10 run
                     against a test broker); a mqtt_tls_hostname that config.json does
                     not set follows broker_host, as it would on the board
Read but without effect: wifi_ssid/wifi_password (the emulated Wi-Fi is always up),
the server ntp_host names (the emulated NTP answers with the simulated clock; "" still
turns NTP off), watchdog_s and maintenance_s (the emulator steps the firmware itself;
there is no watchdog). --speed, --start,
--horizon, --seed, --duplicate-prob and --state-dir apply as with invented meters;
--meters, --prefix, --password, --k-factor, --report-interval and --topic-root do not
(config.json sets those). A folder that cannot run (no config.json, one the firmware
rejects, a TLS file missing) is named on one line per problem, exit code 2.
"""


def parse_broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:1883, got %r" % text)
    return host, int(port)


def parse_ids(text: str) -> list[str]:
    ids = list(dict.fromkeys(i.strip() for i in text.split(",") if i.strip()))
    if not ids:
        raise argparse.ArgumentTypeError("expected meter ids separated by commas, e.g. m0001,m0002")
    return ids


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python tools/emulator", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run AquaFog meters (the real firmware on CPython) against an MQTT broker until Ctrl-C or "
                    "SIGTERM: N invented meters (--meters), or the provisioned meters of a folder (--meters-dir).",
        epilog=METERS_DIR_HELP)
    p.add_argument("--broker", type=parse_broker, default=None,
                   help="HOST:PORT of the broker (invented meters: default 127.0.0.1:1883; with --meters-dir: "
                        "replaces every meter's broker_host and broker_port, default: each meter's own)")
    p.add_argument("--meters-dir", type=Path, default=None,
                   help="run the provisioned meters of this folder, one <id>/config.json each (see below)")
    p.add_argument("--ids", type=parse_ids, default=None,
                   help="with --meters-dir: only these meters, comma-separated (default: every one)")
    p.add_argument("--meters", type=int, default=None, help="how many invented meters (default 200)")
    p.add_argument("--prefix", default=None, help="invented meter id prefix: m -> m0001, m0002, ... (default m)")
    p.add_argument("--seed", type=int, default=1, help="water-use seed (default 1)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    p.add_argument("--start", "--start-epoch", dest="start_epoch", type=float, default=None,
                   help="simulated start, Unix seconds; the clock runs at --speed until it reaches real now, "
                        "then at real time (default: --horizon real seconds of fast replay)")
    p.add_argument("--horizon", type=float, default=3600.0,
                   help="with no --start: real seconds of fast replay before reaching real now (default 3600)")
    p.add_argument("--report-interval", type=int, default=None,
                   help="invented meters: seconds between readings (default 60)")
    p.add_argument("--k-factor", type=float, default=None,
                   help="invented meters: sensor pulses per litre (default 450)")
    p.add_argument("--duplicate-prob", type=float, default=0.0, help="probability of publishing a message twice")
    p.add_argument("--topic-root", default=None, help="invented meters: the topic root (default aquafog)")
    p.add_argument("--password", default=None,
                   help="invented meters: MQTT password for every meter; '{id}' is replaced by the meter id "
                        "(default: none)")
    p.add_argument("--state-dir", "--fs-root", dest="fs_root", default=None,
                   help="directory for the meters' flash files, one folder per meter; reused, a restarted "
                        "fleet continues its registers (default: a temporary directory)")
    p.add_argument("--status-every", type=float, default=10.0, help="real seconds between status lines (0: never)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def fail(message: str) -> int:
    print("emulator: error: %s" % message, file=sys.stderr, flush=True)
    return EXIT_USAGE


def make_fleet(args) -> Fleet:
    kw = dict(seed=args.seed, speed=args.speed, start_epoch=args.start_epoch, duplicate_prob=args.duplicate_prob,
              fs_root=args.fs_root, horizon_s=args.horizon)
    if args.meters_dir is not None:
        return Fleet.from_meters_dir(args.meters_dir, ids=args.ids, broker=args.broker, **kw)
    given = {dest: getattr(args, dest) for dest, _, _, _ in INVENTED}
    v = {dest: default if given[dest] is None else given[dest] for dest, _, default, _ in INVENTED}
    host, port = args.broker or ("127.0.0.1", 1883)
    pw = v["password"]
    password = (lambda mid: pw.replace("{id}", mid)) if "{id}" in pw else pw
    return Fleet(host, port, meter_ids(v["meters"], v["prefix"]), report_interval_s=v["report_interval"],
                 k_factor=v["k_factor"], topic_root=v["topic_root"], mqtt_password=password, **kw)


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.meters_dir is not None:
        for dest, flag, _, key in INVENTED:
            if getattr(args, dest) is not None:
                return fail("%s: not with --meters-dir (each meter's config.json sets %s)"
                            % (flag, key or "which meters there are"))
    elif args.ids is not None:
        return fail("--ids: only with --meters-dir (it picks provisioned meters)")
    elif args.meters is not None and args.meters < 1:
        return fail("--meters: must be >= 1")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        fleet = make_fleet(args)
    except MetersDirError as e:
        for line in e.problems:
            print("emulator: error: %s" % line, file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as e:  # a config the overrides made invalid, a file that vanished meanwhile
        return fail(str(e))

    ms = fleet.meters
    brokers = sorted({"%s:%d%s" % (m.cfg["broker_host"], m.cfg["broker_port"], " (TLS)" if m.cfg["mqtt_tls"] else "")
                      for m in ms})
    source = " from %s" % args.meters_dir if args.meters_dir is not None else ""
    print("emulator: %d meters%s (%s..%s) -> %s, speed x%g, simulated start %s" % (
        len(ms), source, ms[0].id, ms[-1].id, ", ".join(brokers), args.speed,
        datetime.fromtimestamp(fleet.clock.start_epoch, timezone.utc).isoformat(timespec="seconds")), flush=True)
    leak = [m.id for m in ms if m.profile.kind == "leak"]
    heavy = [m.id for m in ms if m.profile.kind == "heavy"]
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
