"""What `aquafog setup` asks of the machine: users, owned files, systemd. One class, so the
file-writing logic runs in tests against a temporary root without touching the system."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .layout import USER


class SetupError(Exception):
    """What went wrong and what to do; nothing after the failed step was changed."""


class System:
    def __init__(self, root: Path = Path("/"), systemd: bool | None = None):
        self.root = Path(root)
        self.real = self.root == Path("/")
        if systemd is None:
            systemd = self.real and Path("/run/systemd/system").is_dir()
        self.systemd = systemd  # False: in a chroot or an image build, units are enabled, not started

    # --- users and ownership ------------------------------------------------------------
    def ensure_user(self, name: str = USER) -> None:
        """The services' system user, as the aquafog package makes it (a pip install has none)."""
        if not self.real:
            return
        try:
            pwd.getpwnam(name)
        except KeyError:
            self._run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/aquafog", "--no-create-home",
                       "--shell", "/usr/sbin/nologin", "--comment", "AquaFog services", name])

    def ids(self, user: str | None, group: str | None) -> tuple[int, int]:
        if not self.real:
            return -1, -1
        try:
            uid = pwd.getpwnam(user).pw_uid if user else 0
            gid = grp.getgrnam(group).gr_gid if group else 0
        except KeyError as exc:
            raise SetupError(f"no user or group {exc.args[0].split(':')[-1].strip()} on this machine: is the "
                             "mosquitto package installed (sudo apt install mosquitto)?") from None
        return uid, gid

    def mkdir(self, path: Path, mode: int, user: str | None = None, group: str | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        if self.real:
            os.chown(path, *self.ids(user, group))

    def write(self, path: Path, text: str, mode: int, user: str | None = None, group: str | None = None) -> bool:
        """Write atomically (a crash leaves the old file or the new one) with this owner and
        mode; True if the content changed."""
        old = path.read_text() if path.exists() else None
        if old == text:
            os.chmod(path, mode)
            if self.real:
                os.chown(path, *self.ids(user, group))
            return False
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            os.fchmod(fd, mode)
            if self.real:
                os.fchown(fd, *self.ids(user, group))
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def copy(self, src: Path, dest: Path, mode: int, user: str | None = None, group: str | None = None) -> bool:
        return self.write(dest, Path(src).read_text(), mode, user, group)

    def as_owner(self, path: Path, fn):
        """fn() run as the owner of the store `path` (or of its folder): its files must
        stay the service's own."""
        from ..store.owner import as_owner
        return as_owner(path, fn)

    # --- systemd ---------------------------------------------------------------------------
    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        if not self.real:
            return subprocess.CompletedProcess(args, 0, "", "")
        return self._run(["systemctl", *args], check=check)

    def enable(self, *units: str) -> None:
        """Enabled works in a chroot too (symlinks); starting needs a running systemd."""
        self.systemctl("enable", "--quiet", *units)

    def active(self, unit: str) -> bool:
        return self.systemd and self.systemctl("is-active", "--quiet", unit, check=False).returncode == 0

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        exe = shutil.which(cmd[0]) or cmd[0]
        r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True)
        if check and r.returncode != 0:
            detail = (r.stderr or r.stdout).strip()
            hint = ""
            if cmd[0] == "systemctl" and cmd[1] in ("start", "restart"):
                hint = f"\nsee why: journalctl -u {cmd[-1]} -n 50 --no-pager"
            raise SetupError(f"`{' '.join(cmd)}` failed ({r.returncode}): {detail}{hint}")
        return r
