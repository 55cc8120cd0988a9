"""Files that hold secrets or that Mosquitto reads, written so that a crash never
leaves half a file: a temporary file in the same folder, fsync, rename.

Mosquitto 2 reads its password and ACL files *after* dropping root privileges (to the
`mosquitto` user of the Debian package), also on every reload. A file this tool
creates is therefore 0640 and group `mosquitto` when that group exists and may be
given, else 0600 (a broker running as the same user as the tool).
"""

from __future__ import annotations

import grp
import os
import tempfile
from pathlib import Path

BROKER_GROUP = "mosquitto"


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Staged:
    """A complete temporary file waiting to be renamed over `path`."""

    def __init__(self, path: Path, tmp: Path):
        self.path, self.tmp = path, tmp

    def commit(self) -> None:
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def _write_tmp(path: Path, text: str, mode: int) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def invoking_user() -> tuple[int, int] | None:
    """(uid, gid) of the user behind `sudo`, when running as root through it."""
    if os.geteuid() != 0 or "SUDO_UID" not in os.environ:
        return None
    try:
        return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", "-1"))
    except ValueError:
        return None


def give_to_invoking_user(path: Path) -> None:
    """A file for the technician (a meter's config.json, which `make flash` reads as
    them) stays theirs when the tool runs under sudo for the broker's files."""
    who = invoking_user()
    if who:
        os.chown(path, *who)


def stage_private(path: Path, text: str) -> Staged:
    """Readable by its owner only (0600); under sudo, the owner is the sudo user."""
    tmp = _write_tmp(Path(path), text, 0o600)
    try:
        give_to_invoking_user(tmp)
    except OSError:
        tmp.unlink()
        raise
    return Staged(Path(path), tmp)


def broker_group_id() -> int | None:
    try:
        return grp.getgrnam(BROKER_GROUP).gr_gid
    except KeyError:
        return None


def _give_to_broker(path: Path, fd: int) -> None:
    """0640 group mosquitto if allowed (root, or a member of the group), else 0600."""
    gid = broker_group_id()
    if gid is not None:
        try:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, 0o640)
            return
        except PermissionError:
            pass
    os.fchmod(fd, 0o600)


def create_broker_file(path: Path) -> bool:
    """Create an empty broker-readable file if there is none; True if created."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        _give_to_broker(path, fd)
    finally:
        os.close(fd)
    return True


def replace_broker_file(path: Path, text: str) -> None:
    """Atomically replace (or create) a file Mosquitto reads, keeping the existing
    file's owner, group and mode."""
    path = Path(path)
    tmp = _write_tmp(path, text, 0o600)
    try:
        if path.exists():
            st = path.stat()
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                pass
            os.chmod(tmp, st.st_mode & 0o777)
        else:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                _give_to_broker(path, fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
