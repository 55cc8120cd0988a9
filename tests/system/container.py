"""A Debian root booted with systemd as PID 1 (systemd-nspawn), on its own network.

    with Container(root, "fog1", subnet_index=11, binds_ro=[(debs, "/debs")]) as c:
        c.run("apt-get install -y /debs/aquafog.deb")
        c.wait_for(lambda: c.run("systemctl is-active aquafog", check=False).returncode == 0,
                   what="aquafog active")
        os.kill(c.host_pid(c.main_pid("aquafog")), signal.SIGKILL)

The container runs on an overlay of `root` (which stays untouched, so one built root
serves every test); its changes live in `workdir` and survive reboot(). Networking is a
network namespace with a veth pair, 10.213.<subnet_index>.1 on the host and .2 inside, and
no default route: the container has no Internet, as a fog gateway that lost its uplink.
The host does not need systemd: nspawn runs with --register=no --keep-unit, and commands
get in with nsenter.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .debian import host_arch, require_foreign_arch, root_arch
from .tools import require_tools

# Commands inside see a clean environment, not pytest's (venv PATH, locale...).
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", "DEBIAN_FRONTEND": "noninteractive"}
REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot

_LIVE: set[Container] = set()  # stopped at exit if a test run is interrupted


class CommandFailed(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (f"{self.cmd!r} exited with {self.returncode} in the container\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


def wait_for(predicate, timeout: float = 30, what: str = "condition", interval: float = 0.2):
    """Poll `predicate()` until it returns something truthy, and return that; on timeout
    raise AssertionError naming `what` (and the predicate's last exception, if any)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported if it never succeeds
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


class Container:
    def __init__(self, root: Path | str, name: str, subnet_index: int, *, arch: str | None = None,
                 workdir: Path | str | None = None, binds=(), binds_ro=(),
                 boot_timeout: float | None = None):
        require_tools("systemd-nspawn", "nsenter", "ip")
        if not 1 <= subnet_index <= 254:
            raise ValueError(f"subnet_index {subnet_index}: must be 1..254 (10.213.<n>.0/24)")
        self.arch = arch or root_arch(root)
        self.foreign = self.arch != host_arch()
        if self.foreign:
            require_foreign_arch(self.arch)
        self.root, self.name, self.subnet_index = Path(root), name, subnet_index
        self.binds, self.binds_ro = list(binds), list(binds_ro)
        # systemd under qemu-user boots in about the same time, but everything is slower.
        self.boot_timeout = boot_timeout or (240 if self.foreign else 90)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"aquafog-{name}-"))
        self.netns = self.veth = f"aquafog{subnet_index}"  # a netns, and the host's veth end
        self.host_ip = f"10.213.{subnet_index}.1"
        self.ip = f"10.213.{subnet_index}.2"
        self.merged = self.workdir / "root"
        self.console_log = self.workdir / "console.log"
        self.nspawn: subprocess.Popen | None = None
        self.pid1 = 0  # the container's PID 1 as the host sees it
        self.state = ""  # what is-system-running said after the last boot
        self.failed_units: list[str] = []
        self.timings: dict[str, float] = {}
        self._mounted = self._networked = False  # what stop() has to undo

    # --- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Container:
        _LIVE.add(self)
        try:
            self._mount_overlay()
            self._make_network()
            self._boot()
        except BaseException:
            self.stop()
            raise
        return self

    def reboot(self) -> None:
        """`systemctl reboot` inside. nspawn then exits with status 133 (its own service
        unit would start it again), so boot the same overlay again."""
        t0 = time.monotonic()
        self.run(["systemctl", "reboot", "--no-block"], timeout=30)
        try:
            rc = self.nspawn.wait(timeout=self.boot_timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name}: did not go down within {self.boot_timeout} s "
                                 f"of `systemctl reboot`\n{self.console_tail()}") from None
        if rc != REBOOT_EXIT:
            raise AssertionError(f"{self.name}: systemd-nspawn exited {rc} on reboot "
                                 f"(expected {REBOOT_EXIT})\n{self.console_tail()}")
        self._boot()
        self.timings["reboot"] = time.monotonic() - t0

    def stop(self, timeout: float = 30) -> None:
        """Power off (kill PID 1, which ends every process inside, if that takes longer
        than `timeout`), then remove the overlay mount, the network namespace and the
        veth. Safe to call twice, and after a failed start."""
        if self.nspawn and self.nspawn.poll() is None:
            deadline = time.monotonic() + timeout
            if self.pid1:
                try:
                    subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "--", "systemctl",
                                    "poweroff", "--no-block"], env=ENV, capture_output=True,
                                   timeout=timeout / 2)
                except subprocess.TimeoutExpired:
                    pass
            try:
                self.nspawn.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # Killing PID 1 ends every process in its PID namespace; nspawn exits once
                # the kernel has reaped them all (a few seconds).
                pid1 = self.pid1 or _child(self.nspawn.pid)
                if pid1 > 0:  # never 0: os.kill(0) would hit our own process group
                    _kill(pid1)
                try:
                    self.nspawn.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _kill(self.nspawn.pid)
                    self.nspawn.wait(timeout=30)
        self.pid1 = 0
        if self._mounted and self.merged.is_mount():
            if subprocess.run(["umount", str(self.merged)], capture_output=True).returncode:
                subprocess.run(["umount", "--lazy", str(self.merged)], capture_output=True)
        if self._networked:
            _delete_network(self.netns, self.veth)
        self._mounted = self._networked = False
        # nspawn leaves this behind when the host's /run is not a tmpfs.
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        _LIVE.discard(self)
        release_subnet_index(self.subnet_index)

    def _mount_overlay(self) -> None:
        for d in ("upper", "work", "root"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.root},upperdir={self.workdir / 'upper'},"
                        f"workdir={self.workdir / 'work'}", str(self.merged)], check=True)
        self._mounted = True
        (self.merged / "etc/hostname").write_text(self.name + "\n")
        # the name resolves, as on a real machine (sudo complains otherwise)
        (self.merged / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n::1 localhost\n")

    def _make_network(self) -> None:
        taken = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                               text=True, check=True).stdout
        if f" 10.213.{self.subnet_index}." in taken:
            raise RuntimeError(f"10.213.{self.subnet_index}.0/24 is already used on this host "
                               f"(ip -4 addr): pick another subnet_index")
        self._networked = True
        _delete_network(self.netns, self.veth)  # a namespace left by a run that was killed
        for cmd in (["netns", "add", self.netns],
                    ["link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
                     "netns", self.netns],
                    ["addr", "add", f"{self.host_ip}/24", "dev", self.veth],
                    ["link", "set", self.veth, "up"],
                    ["-n", self.netns, "addr", "add", f"{self.ip}/24", "dev", "eth0"],
                    ["-n", self.netns, "link", "set", "eth0", "up"],
                    ["-n", self.netns, "link", "set", "lo", "up"]):
            subprocess.run(["ip", *cmd], check=True, capture_output=True)

    def _boot(self) -> None:
        t0 = time.monotonic()
        cmd = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--boot",
               "-D", str(self.merged), f"--machine={self.name}",
               f"--network-namespace-path=/run/netns/{self.netns}",
               "--console=read-only", "--link-journal=no", "--resolv-conf=off",
               "--timezone=off"]
        cmd += [f"--bind={h}:{c}" for h, c in self.binds]
        cmd += [f"--bind-ro={h}:{c}" for h, c in self.binds_ro]
        with open(self.console_log, "ab") as log:
            log.write(f"\n===== boot {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT)
        self.pid1 = wait_for(self._find_pid1, self.boot_timeout, f"{self.name}'s PID 1",
                             interval=0.05)
        self.state = wait_for(self._system_state, self.boot_timeout,
                              f"{self.name} to finish booting", interval=0.2)
        self.failed_units = []
        if self.state == "degraded":
            self.failed_units = self.run(["systemctl", "--failed", "--plain", "--no-legend"]
                                         ).stdout.split("\n")
            self.failed_units = [u.split()[0] for u in self.failed_units if u.strip()]
            print(f"{self.name}: booted degraded, failed units: {self.failed_units}")
        elif self.state != "running":
            raise AssertionError(f"{self.name}: system state {self.state!r} after boot\n"
                                 + self.console_tail())
        self.timings["boot"] = time.monotonic() - t0

    def _find_pid1(self) -> int:
        if self.nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.nspawn.returncode} while "
                                 f"booting {self.name}\n{self.console_tail()}")
        pid = _child(self.nspawn.pid)
        return pid if _nspid(pid)[-1:] == [1] else 0

    def _system_state(self) -> str:
        if self.nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.nspawn.returncode} while "
                                 f"booting {self.name}\n{self.console_tail()}")
        # --wait returns once the boot job queue is empty; fails (retried) until systemd's
        # private socket exists.
        p = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=60)
        state = p.stdout.strip()
        return state if state in ("running", "degraded", "maintenance", "stopping") else ""

    def console_tail(self, lines: int = 40) -> str:
        text = self.console_log.read_text(errors="replace") if self.console_log.exists() else ""
        return "--- console (last lines) ---\n" + "\n".join(text.splitlines()[-lines:])

    # --- inside the container -------------------------------------------------------

    def run(self, cmd, check: bool = True, timeout: float = 120, input: str | None = None,
            user: str | None = None) -> subprocess.CompletedProcess:
        """Run `cmd` (a list, or a string for sh -c) inside, as root or `user`; capture its
        output. On a timeout it is killed inside too (its process group) and CommandFailed
        is raised, whatever `check` says."""
        if not self.pid1:
            raise RuntimeError(f"{self.name} is not running")
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        p = subprocess.Popen(["nsenter", "-t", str(self.pid1), "-a", "--", *argv], env=ENV,
                             stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise CommandFailed(-9, cmd, out, err + f"\n(killed after {timeout} s)") from None
        if check and p.returncode != 0:
            raise CommandFailed(p.returncode, cmd, out, err)
        return subprocess.CompletedProcess(cmd, p.returncode, out, err)

    def host_path(self, path: str) -> Path:
        """Where `path` (absolute, inside) is on the host: read or write it directly."""
        return self.merged / path.lstrip("/")

    def main_pid(self, unit: str) -> int:
        """The unit's main PID inside the container's PID namespace (0 if not running)."""
        return int(self.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout)

    def host_pid(self, pid: int) -> int:
        """The host's PID of the container's process `pid`, to signal it from the host
        (os.kill(c.host_pid(c.main_pid("x")), signal.SIGSTOP))."""
        ns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if _nspid(int(entry.name))[-1:] == [pid] and \
                        os.readlink(entry / "ns/pid") == ns:
                    return int(entry.name)
            except (FileNotFoundError, ProcessLookupError):
                continue
        raise LookupError(f"no process {pid} in {self.name}'s PID namespace")

    def journal(self, unit: str | None = None, boot_only: bool = False) -> str:
        cmd = ["journalctl", "--no-pager", "-o", "short-precise"]
        cmd += ["-u", unit] if unit else []
        cmd += ["-b"] if boot_only else []
        return self.run(cmd, check=False).stdout

    def wait_for(self, predicate, timeout: float = 30, what: str = "condition",
                 interval: float = 0.2):
        """wait_for() whose timeout message also shows the container's failed units."""
        try:
            return wait_for(predicate, timeout, what, interval)
        except AssertionError as e:
            failed = self.run(["systemctl", "--failed", "--no-pager"], check=False).stdout
            raise AssertionError(f"{self.name}: {e}\n{failed}") from None

    def __repr__(self) -> str:
        return f"Container({self.name!r}, {self.arch}, {self.ip})"


def _nspid(pid: int) -> list[int]:
    """The PIDs of `pid` in its nested PID namespaces, outermost first."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return []


_used_subnets: set[int] = set()


def free_subnet_index() -> int:
    """A 10.213.<n>.0/24 that no host interface and no Container of this process uses."""
    taken = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                           text=True).stdout
    for n in range(10, 255):
        if n not in _used_subnets and f" 10.213.{n}." not in taken:
            _used_subnets.add(n)
            return n
    raise RuntimeError("no free 10.213.<n>.0/24 subnet left")


def release_subnet_index(n: int) -> None:
    _used_subnets.discard(n)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _child(pid: int) -> int:
    """nspawn's one child: the container's PID 1 once it is up (0 if none)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0
    return int(children[0]) if children else 0


def _delete_network(netns: str, veth: str) -> None:
    # Deleting the namespace destroys the veth end inside, and with it the host's end.
    if Path(f"/run/netns/{netns}").exists():
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
    if Path(f"/sys/class/net/{veth}").exists():
        subprocess.run(["ip", "link", "delete", veth], capture_output=True)


@atexit.register
def _stop_all() -> None:
    for c in list(_LIVE):
        c.stop()
