"""The one module that touches Mosquitto: `mosquitto_passwd` on the password file, a
lock against a second provisioning run, and making a running broker reload its files.

`mosquitto_passwd -b FILE USER PASSWORD` adds or updates one user and keeps the
others (it rewrites the file in place, so its owner and mode stay). `-c` is never
used: it truncates an existing file. A missing file is created empty first.

A reload: SIGHUP to the pid given (--reload-pid), else, where systemd runs Mosquitto
as the active `mosquitto` service, `systemctl reload mosquitto` (Debian's unit sends
SIGHUP), else nothing (the caller says how to do it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import ProvisionError, files

INSTALL_HINT = "install it: `sudo apt-get install mosquitto` (mosquitto_passwd ships in that package)"


PASSWD_TOOL_PATHS = ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd")


def find_passwd_tool() -> str:
    for candidate in (shutil.which("mosquitto_passwd"), *PASSWD_TOOL_PATHS):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ProvisionError("mosquitto_passwd not found", hint=f"{INSTALL_HINT}; nothing was changed")


def passwd_users(path: Path) -> set[str]:
    """User names in a Mosquitto password file (`user:hash` lines)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return set()
    return {line.split(":", 1)[0] for line in text.splitlines() if ":" in line and not line.startswith("#")}


def check_writable(path: Path, what: str) -> None:
    """Before any change: can this file (or the folder it will be created in) be written?"""
    path = Path(path)
    d = path.parent
    if not d.is_dir():
        raise ProvisionError(f"{what} {path}: the folder {d} does not exist",
                             hint=f"create it (`sudo mkdir -p {d}`) or choose another path; nothing was changed")
    target = path if path.exists() else d
    if not os.access(target, os.W_OK):
        raise ProvisionError(f"{what} {path}: not writable by this user",
                             hint="run the tool as the owner of the broker's files (e.g. with sudo); "
                                  "nothing was changed")


@contextmanager
def _locked_dir(passwd_file: Path):
    fd = os.open(Path(passwd_file).parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvisionError(f"{passwd_file}: another provisioning run is using it",
                                 hint="wait for it to finish, then run again; nothing was changed") from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def locked(*passwd_files: Path | None):
    """Hold an exclusive lock (on each password file's folder, so nothing is created)
    while a run checks and edits the password and ACL files: two technicians
    provisioning at once take turns, and neither acts on what it read before the other
    wrote. Each folder is locked once, in a fixed order."""
    folders: dict[Path, Path] = {}
    for f in passwd_files:
        if f is not None:
            folders.setdefault(Path(f).parent.resolve(), Path(f))
    with ExitStack() as stack:
        for folder in sorted(folders):
            stack.enter_context(_locked_dir(folders[folder]))
        yield


class PasswdFile:
    def __init__(self, path: Path, tool: str | None = None):
        self.path = Path(path)
        self.tool = tool or find_passwd_tool()

    def users(self) -> set[str]:
        return passwd_users(self.path)

    def set(self, user: str, password: str) -> None:
        """Add `user` or change its password."""
        files.create_broker_file(self.path)
        try:
            r = subprocess.run([self.tool, "-b", str(self.path), user, password],
                               capture_output=True, text=True, timeout=60)
        except OSError as exc:
            raise ProvisionError(f"cannot run {self.tool}: {exc}", hint=INSTALL_HINT) from None
        if r.returncode != 0:
            out = (r.stderr or r.stdout).strip().replace(password, "***")
            raise ProvisionError(f"mosquitto_passwd could not set the password of {user!r} in {self.path}: "
                                 f"{out or 'exit code %d' % r.returncode}",
                                 hint="check that the file is a Mosquitto password file and is writable")


def check_reload_target(pid: int) -> None:
    """Before any change: is `pid` a Mosquitto? SIGHUP ends most other programs."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        raise ProvisionError(f"--reload-pid {pid}: no such process",
                             hint="find the broker with `pidof mosquitto`, or leave --reload-pid out and run "
                                  "`sudo systemctl reload mosquitto` afterwards; nothing was changed") from None
    except OSError:
        return  # no /proc: trust the caller
    if name != "mosquitto":
        raise ProvisionError(f"--reload-pid {pid}: that process is {name!r}, not mosquitto",
                             hint="find the broker with `pidof mosquitto`; nothing was changed")


def reload(pid: int) -> None:
    """SIGHUP: Mosquitto rereads its password and ACL files and re-checks the clients
    already connected."""
    check_reload_target(pid)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ProvisionError(f"--reload-pid {pid}: no such process",
                             hint="run `sudo systemctl reload mosquitto`") from None
    except PermissionError:
        raise ProvisionError(f"--reload-pid {pid}: not allowed to signal it",
                             hint=f"run `sudo systemctl reload mosquitto` (or `sudo kill -HUP {pid}`)") from None


# Where systemd runs (sd_booted(3)), and its command; tests point these elsewhere.
SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")
SYSTEMCTL = "systemctl"
SERVICE = "mosquitto"


@dataclass
class Reload:
    """What was done to make Mosquitto reread its files: "pid" (SIGHUP to `pid`),
    "systemd" (systemctl reload), "failed" (systemctl said `detail`), or "none"."""

    how: str
    pid: int | None = None
    detail: str = ""


def _systemctl() -> str | None:
    return shutil.which(SYSTEMCTL)


def systemd_service_active() -> bool:
    """Does systemd run the `mosquitto` service here, now?"""
    exe = _systemctl()
    if not SYSTEMD_RUNTIME_DIR.is_dir() or exe is None:
        return False
    try:
        return subprocess.run([exe, "is-active", "--quiet", SERVICE], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def reload_service() -> Reload:
    """`systemctl reload mosquitto`; a failure is reported, not raised: the files are
    already changed, only the reload is left to do."""
    try:
        r = subprocess.run([_systemctl() or SYSTEMCTL, "reload", SERVICE], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Reload("failed", detail=str(exc))
    if r.returncode != 0:
        return Reload("failed", detail=(r.stderr or r.stdout).strip() or f"exit code {r.returncode}")
    return Reload("systemd")


def reload_after_change(pid: int | None, auto: bool = True) -> Reload:
    """Make the broker reread its files: SIGHUP to `pid` if given (raises if that fails),
    else, with `auto`, `systemctl reload mosquitto` when systemd runs it."""
    if pid:
        reload(pid)
        return Reload("pid", pid=pid)
    if auto and systemd_service_active():
        return reload_service()
    return Reload("none")
