"""`make run`: a working fog on this machine. Mosquitto with the generated config,
the gateway, and emulated meters running the real firmware, all on 127.0.0.1, with
their files under ./run/. Prints the API URL and commands to try; Ctrl-C stops
everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))

from aquafog.broker import LocalBroker  # noqa: E402
from aquafog.gateway.local import LocalGateway  # noqa: E402

PY = sys.executable


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meters", type=int, default=200, help="emulated meters (default 200)")
    ap.add_argument("--speed", type=float, default=60.0,
                    help="simulated seconds per real second until the meters catch up with now (default 60)")
    ap.add_argument("--replay-hours", type=float, default=3.0,
                    help="the fleet starts this many hours in the past and replays them fast (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--http-port", type=int, default=8080, help="API port if free, else any free port")
    ap.add_argument("--run-dir", default=str(ROOT / "run"))
    ap.add_argument("--timezone", default=os.environ.get("AQUAFOG_TIMEZONE", "UTC"))
    args = ap.parse_args()

    run = Path(args.run_dir)
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    children: list[tuple[str, subprocess.Popen]] = []
    broker = None
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        broker = LocalBroker(run / "broker").start()
        http_port = args.http_port if port_free(args.http_port) else None
        ids = [f"m{i:04d}" for i in range(1, args.meters + 1)]
        gateway = LocalGateway(run, broker.port, ids, http_port=http_port, timezone=args.timezone)
        gateway.start()
        children.append(("gateway", gateway.proc))
        api = gateway.url

        fleet_log = open(run / "emulator.log", "ab")
        start = int(time.time() - args.replay_hours * 3600)
        em = subprocess.Popen([PY, str(ROOT / "tools" / "emulator"), "--broker", f"127.0.0.1:{broker.port}",
                               "--meters", str(args.meters), "--prefix", "m", "--seed", str(args.seed),
                               "--speed", str(args.speed), "--start", str(start),
                               "--state-dir", str(run / "meters")],
                              stdout=fleet_log, stderr=subprocess.STDOUT)
        children.append(("emulator", em))

        print(f"""
AquaFog demo is running ({args.meters} emulated meters replaying the last {args.replay_hours:g} h at
{args.speed:g}x, then in real time).

  API         {api}
  broker      mqtt://127.0.0.1:{broker.port}   (watch: mosquitto_sub -p {broker.port} -t 'aquafog/#' -v)
  files, logs {run}/

Try:
  curl -s '{api}/ranking?n=10&period=today'
  curl -s  {api}/meters/m0007
  curl -s -X POST -H 'Content-Type: application/json' -d '{{"state":"closed","reason":"demo"}}' {api}/meters/m0007/valve
  curl -s  {api}/meters/m0007/commands
  curl -s  {api}/health

Ctrl-C stops everything.
""", flush=True)
        first = True
        shown_at = time.monotonic() + 60  # show the top 3 once they used water, or after a minute
        while not stopping:
            for name, p in children:
                if p.poll() is not None:
                    print(f"demo: the {name} exited with code {p.returncode}; see {run}/{name}.log", file=sys.stderr)
                    return 1
            if first:
                try:
                    with urllib.request.urlopen(f"{api}/ranking?n=3", timeout=2) as r:
                        top = json.loads(r.read())["items"]
                    if top and (top[-1]["litres"] > 0 or time.monotonic() > shown_at):
                        print("top 3 today: " + ", ".join(f"{i['meter']} {i['litres']:.1f} L" for i in top),
                              flush=True)
                        first = False
                except OSError:
                    pass
            time.sleep(0.5)
        return 0
    finally:
        for name, p in reversed(children):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(children):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if broker is not None:
            broker.stop()
        print("demo: stopped the emulator, the gateway and the broker", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
