"""`make run`: a small city on this machine, set up the secure way an installed one is.

Two fogs, "north" and "south", each with its own Mosquitto (bridged to the cloud's), its
own gateway and its own emulated meters running the real firmware (n0001.., s0001..);
and the cloud: its own Mosquitto and `aquafog cloud` on SQLite. All on 127.0.0.1, with
their files and logs under ./run/. It prints every API URL and commands to try, then a
line once the city ranking at the cloud lists meters of both fogs (the whole chain
works). Ctrl-C or SIGTERM stops everything it started, in order, and exits 0.

No broker takes anonymous clients. Each meter is provisioned as in the field (its own
MQTT password, config.json under run/<fog>/meters/, the ACL confining it to its own
topics); the gateways and the cloud use service accounts on loopback service listeners
of their own; each fog's bridge logs in to the cloud broker with an account confined to
its region's topics (docs/security.md).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))

from aquafog.bridge import BridgeConfig  # noqa: E402
from aquafog.broker import LocalBroker, free_port  # noqa: E402
from aquafog.cloud.local import LocalCloud  # noqa: E402
from aquafog.gateway.local import LocalGateway  # noqa: E402
from aquafog.provisioning.provisioner import provision_meters, provision_service  # noqa: E402
from aquafog.provisioning.site import Site  # noqa: E402
from aquafog.store.engine import open_engine  # noqa: E402

PY = sys.executable
# the fogs start with a dry run of the mean rule, so GET /policy shows who would be blocked
DEMO_POLICY = {"mode": "dry_run", "period": "day", "mean_factor": 2.0}
FOGS = (("north", "n"), ("south", "s"))  # region, meter id prefix (ids unique across the city)
READY_TIMEOUT_S = 60.0
AQUAFOG = Path(sys.executable).with_name("aquafog")  # the command, in the venv make made


class Stop(Exception):
    """Ctrl-C or SIGTERM."""


def on_signal(signum, _frame):
    raise Stop(signum)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pick_port(preferred: int) -> int:
    return preferred if preferred and port_free(preferred) else free_port()


def get_json(url: str, token: str | None = None) -> tuple[int, dict | None]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return 0, None


def tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def ports(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ports separated by commas, e.g. 8080,8081, got {text!r}")


class Fog:
    """One region: its broker (bridged to the cloud broker), its gateway, its emulated meters,
    every one with its own account."""

    def __init__(self, region: str, prefix: str, run: Path, args, cloud: "Cloud", http_port: int, seed: int):
        self.region, self.dir = region, run / region
        width = max(4, len(str(args.meters)))
        self.ids = [f"{prefix}{i:0{width}d}" for i in range(1, args.meters + 1)]
        self.prefix, self.args, self.seed = prefix, args, seed
        self.cloud = cloud
        self.http_port = http_port
        self.broker: LocalBroker | None = None
        self.gateway: LocalGateway | None = None
        self.emulator: subprocess.Popen | None = None
        self._emulator_log = None
        self.token: str | None = None        # an admin's, for the curl examples
        self.cloud_token: str | None = None  # an operator's, for the cloud's meter detail

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    @property
    def meters_dir(self) -> Path:
        return self.dir / "meters"

    def start(self, password: str) -> None:
        broker_dir = self.dir / "broker"
        broker_dir.mkdir(parents=True)
        db = self.dir / "gateway.db"
        open_engine(db).dispose()  # provisioning registers the meters in it
        meter_port, service_port = free_port(), free_port()
        # the meters' listener and the service listener each have their own accounts
        site = Site(wifi_ssid="demo", broker_host="127.0.0.1", broker_port=meter_port, db=db,
                    passwd_file=broker_dir / "meters.passwd", acl_file=broker_dir / "meters.acl",
                    services_passwd_file=broker_dir / "services.passwd",
                    services_acl_file=broker_dir / "services.acl", meters_dir=self.meters_dir,
                    meter={"report_interval_s": 60})
        provision_meters(site, self.ids, reload=False)
        gateway_account = provision_service(site, "gateway", "gateway", reload=False)
        fog_user, fog_password = self.cloud.fog_accounts[self.region]
        self.broker = LocalBroker(
            broker_dir, meter_port, new_session=True, password_file=site.passwd_file, acl_file=site.acl_file,
            service_port=service_port, service_password_file=site.services_passwd_file,
            service_acl_file=site.services_acl_file,
            bridge=BridgeConfig(self.region, "127.0.0.1", self.cloud.broker.port, restart_timeout=(1, 5),
                                remote_username=fog_user, remote_password=fog_password))
        self.broker.start()
        self.gateway = LocalGateway(
            self.dir, service_port, http_port=self.http_port, new_session=True, db_path=db,
            mqtt_username=gateway_account.name, mqtt_password=gateway_account.password,
            timezone=self.args.timezone, region=self.region, summary_interval_ms=500,
            api_url=f"http://127.0.0.1:{self.http_port}",  # where the cloud reaches this fog's API (meter detail)
            policy=DEMO_POLICY,
        )
        # the demo's own accounts: no default password, a random one printed once
        self.gateway.add_user("admin", "admin", password)
        self.token = self.gateway.token("admin")
        self.cloud_token = self.gateway.token("cloud", role="operator")  # the cloud reads meter detail with it
        self.gateway.start()
        self._emulator_log = open(self.dir / "emulator.log", "ab")
        start = int(time.time() - self.args.replay_hours * 3600)
        self.emulator = subprocess.Popen(
            [PY, str(ROOT / "tools" / "emulator"), "--meters-dir", str(self.meters_dir), "--seed", str(self.seed),
             "--speed", str(self.args.speed), "--start", str(start), "--state-dir", str(self.dir / "flash")],
            stdout=self._emulator_log, stderr=subprocess.STDOUT, start_new_session=True)

    def children(self) -> list[tuple[str, subprocess.Popen | None, Path]]:
        return [(f"{self.region} broker", self.broker and self.broker.proc, self.dir / "broker" / "mosquitto.log"),
                (f"{self.region} gateway", self.gateway and self.gateway.proc, self.dir / "gateway.log"),
                (f"{self.region} emulator", self.emulator, self.dir / "emulator.log")]


class Cloud:
    """The cloud's own broker (an account per fog, confined to its region; the cloud's own on
    a loopback service listener) and the `aquafog cloud` process (SQLite under run/cloud)."""

    def __init__(self, run: Path, args, http_port: int, regions):
        self.dir = run / "cloud"
        broker_dir = self.dir / "broker"
        broker_dir.mkdir(parents=True)
        fogs = Site(passwd_file=broker_dir / "fogs.passwd", acl_file=broker_dir / "fogs.acl", meters_dir=None)
        services = Site(passwd_file=broker_dir / "services.passwd", acl_file=broker_dir / "services.acl",
                        meters_dir=None)
        self.fog_accounts = {}
        for region in regions:
            a = provision_service(fogs, f"fog-{region}", "fog", region=region, reload=False)
            self.fog_accounts[region] = (a.name, a.password)
        self.account = provision_service(services, "cloud", "cloud", reload=False)
        self.broker = LocalBroker(broker_dir, new_session=True, password_file=fogs.passwd_file,
                                  acl_file=fogs.acl_file, service_port=free_port(),
                                  service_password_file=services.passwd_file, service_acl_file=services.acl_file)
        self.http_port = http_port
        self.args = args
        self.service: LocalCloud | None = None
        self.log_path = self.dir / "cloud.log"
        self.token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.service and self.service.proc

    def start(self, fog_tokens: dict[str, str], password: str, timeout: float = 30.0) -> None:
        """The service, once the broker runs (broker.start()) and the fogs made their tokens."""
        self.service = LocalCloud(self.dir, self.broker.service_port, self.http_port, new_session=True,
                                  timezone=self.args.timezone, fog_tokens=fog_tokens,
                                  mqtt_username=self.account.name, mqtt_password=self.account.password)
        self.service.add_user("admin", "admin", password)
        self.token = self.service.token("admin")
        self.service.start(timeout)

    def children(self) -> list[tuple[str, subprocess.Popen | None, Path]]:
        return [("cloud broker", self.broker.proc, self.broker.log_path), ("cloud", self.proc, self.dir / "cloud.log")]


def terminate(procs: list[subprocess.Popen | None], timeout: float = 20.0) -> None:
    """SIGTERM all at once, then wait for each (SIGKILL if one hangs)."""
    live = [p for p in procs if p is not None and p.poll() is None]
    for p in live:
        p.send_signal(signal.SIGTERM)
    for p in live:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def shutdown(cloud: Cloud, fogs: list[Fog]) -> None:
    """Meters first (they publish their offline status), then the gateways (they commit what
    they hold), the fog brokers, the cloud and its broker."""
    terminate([f.emulator for f in fogs])
    terminate([f.gateway.proc for f in fogs if f.gateway is not None])
    for f in fogs:
        if f.gateway is not None:
            f.gateway.stop()
        if f._emulator_log:
            f._emulator_log.close()
    for f in fogs:
        if f.broker is not None:
            f.broker.stop()
    terminate([cloud.proc])
    if cloud.service is not None:
        cloud.service.stop()
    cloud.broker.stop()


def city_top(cloud: Cloud) -> tuple[list, set[str], str]:
    """The city's top 3 today (this month's while nobody has used water today: the replay
    just after midnight), the regions whose partials it merged, and which period."""
    for period in ("today", "month"):
        status, body = get_json(cloud.url + f"/city/ranking?n=3&period={period}", cloud.token)
        if status != 200:
            return [], set(), period
        if body["items"]:
            break
    return body["items"], set(body["regions"]) - set(body.get("missing_regions", ())), period


def banner(args, run: Path, cloud: Cloud, fogs: list[Fog], password: str) -> str:
    c = cloud.url
    s, n = fogs[-1], fogs[0]
    meter = s.ids[min(6, len(s.ids) - 1)]
    fog_lines = "\n".join(
        f"  fog {f.region:<7} API {f.url:<32} broker mqtt://127.0.0.1:{f.broker.port:<6} meters {f.ids[0]}..{f.ids[-1]}"
        f"\n              service listener mqtt://127.0.0.1:{f.broker.service_port}; meters' configs {f.meters_dir}/"
        for f in fogs)
    return f"""
AquaFog demo: {len(fogs)} fogs and the cloud, {args.meters} emulated meters per fog replaying the
last {args.replay_hours:g} h at {args.speed:g}x, then in real time.

{fog_lines}
  cloud       API {c:<32} broker mqtt://127.0.0.1:{cloud.broker.port}
              service listener mqtt://127.0.0.1:{cloud.broker.service_port}
  files, logs {run}/

No broker lets anyone in without an account: every meter has its own password (in its
config.json), the gateways and the cloud have service accounts, each fog's bridge an account
confined to its region on the cloud broker (docs/security.md).
The aquafog command: {AQUAFOG} (or `source {AQUAFOG.parent}/activate`).

Dashboards, in a browser: the city {c.removesuffix("/api/v1")}/ ; {" ; ".join(f"{f.region} {f.url.removesuffix('/api/v1')}/" for f in fogs)}
Log in everywhere as admin, password {password} (made for this run; not stored anywhere else).
API tokens for curl (`aquafog token add` makes more):
  export CLOUD={cloud.token}
  export {n.region.upper()}={n.token}
  export {s.region.upper()}={s.token}

Try, at the cloud (the whole city):
  curl -s -H "Authorization: Bearer $CLOUD" '{c}/city/ranking?n=10'
  curl -s -H "Authorization: Bearer $CLOUD"  {c}/city/mean
  curl -s -H "Authorization: Bearer $CLOUD"  {c}/fogs
  curl -s -H "Authorization: Bearer $CLOUD"  {c}/meters/{meter}
  curl -s -H "Authorization: Bearer $CLOUD" -X POST -H 'Content-Type: application/json' \\
       -d '{{"state":"closed","reason":"demo","command_id":"demo-block-1"}}' {c}/meters/{meter}/valve
  curl -s -H "Authorization: Bearer $CLOUD"  {c}/commands/demo-block-1
  curl -s -H "Authorization: Bearer $CLOUD"  {c}/policy   # each fog's: a dry run of "above 2x the city mean today"
  curl -s -H "Authorization: Bearer $CLOUD" -X PUT -H 'Content-Type: application/json' \\
       -d '{{"mode":"enforce","period":"day","mean_factor":2,"exempt":["{meter}"]}}' {c}/policy
At a fog (its own region):
  curl -s -H "Authorization: Bearer ${s.region.upper()}" '{s.url}/ranking?n=10&period=today'
  curl -s -H "Authorization: Bearer ${s.region.upper()}"  {s.url}/meters/{meter}
  curl -s -H "Authorization: Bearer ${n.region.upper()}"  {n.url}/city/mean
  curl -s                                    {n.url}/health
  curl -s -H "Authorization: Bearer ${n.region.upper()}" '{n.url}/policy?limit=5'   # who would be blocked, and why
  curl -s -H "Authorization: Bearer ${n.region.upper()}"  {n.url}/policy/blocks
  {c}/openapi.json describes every endpoint.

Ctrl-C stops everything.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meters", type=int, default=100, help="emulated meters per fog (default 100)")
    ap.add_argument("--speed", type=float, default=60.0,
                    help="simulated seconds per real second until the meters catch up with now (default 60)")
    ap.add_argument("--replay-hours", type=float, default=3.0,
                    help="the fleets start this many hours in the past and replay them fast (default 3)")
    ap.add_argument("--seed", type=int, default=1, help="water-use seed of the first fog (the next: +1, ...)")
    ap.add_argument("--fog-ports", type=ports, default=(8080, 8081),
                    help="the fogs' API ports, north,south, each if free, else any free port (default 8080,8081)")
    ap.add_argument("--cloud-port", type=int, default=8090,
                    help="the cloud's API port if free, else any free port (default 8090)")
    ap.add_argument("--run-dir", default=str(ROOT / "run"), help="files and logs, emptied first (default ./run)")
    ap.add_argument("--timezone", default=os.environ.get("AQUAFOG_TIMEZONE", "UTC"))
    args = ap.parse_args()
    if args.meters < 1:
        ap.error("--meters must be >= 1")
    if len(args.fog_ports) != len(FOGS):
        ap.error(f"--fog-ports needs {len(FOGS)} ports, one per fog")

    run = Path(args.run_dir).resolve()
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)

    # Every child runs in its own session, so a terminal's Ctrl-C reaches only this process,
    # which then stops them in order (meters before gateways before brokers).
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cloud: Cloud | None = None
    fogs: list[Fog] = []
    t0 = time.monotonic()
    try:
        password = secrets.token_urlsafe(12)
        cloud = Cloud(run, args, pick_port(args.cloud_port), [region for region, _ in FOGS])
        cloud.broker.start()
        for i, ((region, prefix), port) in enumerate(zip(FOGS, args.fog_ports)):
            fogs.append(Fog(region, prefix, run, args, cloud, pick_port(port), args.seed + i))
            fogs[-1].start(password)
        cloud.start({f.region: f.cloud_token for f in fogs}, password)
        print(banner(args, run, cloud, fogs, password), flush=True)
        children = cloud.children() + [c for f in fogs for c in f.children()]
        regions = {f.region for f in fogs}
        ready = shown = False
        print("waiting for the city ranking at the cloud ...", flush=True)
        while True:
            for name, p, log in children:
                if p is not None and p.poll() is not None:
                    print(f"demo: the {name} exited with code {p.returncode}; its log ({log}):\n{tail(log)}",
                          file=sys.stderr, flush=True)
                    return 1
            if not shown:
                top, merged, period = city_top(cloud)
                waited = time.monotonic() - t0
                if not ready and regions <= merged:  # the partials of every fog reached the cloud
                    ready = True
                    both = " and ".join(sorted(regions))
                    print(f"ready: the city ranking at the cloud merges the partials of {both} "
                          f"({waited:.1f} s after start)", flush=True)
                if ready and top and (top[-1]["litres"] > 0 or waited > READY_TIMEOUT_S):  # once they used water
                    shown = True
                    print(f"city top 3 {'today' if period == 'today' else 'this month'}: "
                          + ", ".join(f"{i['meter']} ({i['region']}) {i['litres']:.1f} L" for i in top), flush=True)
                elif not ready and waited > READY_TIMEOUT_S:
                    shown = True  # say it once, keep running
                    print(f"demo: no city ranking at the cloud after {READY_TIMEOUT_S:.0f} s; see "
                          f"{cloud.log_path}, each fog's gateway.log and broker/mosquitto.log", file=sys.stderr,
                          flush=True)
            time.sleep(0.2)
    except Stop:
        return 0
    except Exception as exc:  # a part did not start: say which and why, then stop the rest
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the shutdown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if cloud is not None:
            shutdown(cloud, fogs)
        print(f"demo: stopped {len(fogs)} emulators, {len(fogs)} gateways, the cloud and "
              f"{len(fogs) + 1} brokers", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
