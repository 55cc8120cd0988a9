"""Store work done as the store's owner, so that root never leaves files the services cannot open.

On an installed fog the gateway's SQLite store belongs to the system user `aquafog`
(0640, in /var/lib/aquafog, 0750). A command run as root that opened it directly would
create root-owned files next to it (a new store; SQLite's -wal and -shm) that the
gateway then cannot open. As root, `as_owner(path, fn)` runs `fn` in a forked child
that has become the owner of `path` (of its nearest existing folder while the file
does not exist yet): setgid, initgroups, setuid. Not root, or a root-owned store: `fn`
runs here, unchanged.

The child's result comes back pickled, and what it printed is printed here; its
exception is raised again here, with the same type when it can be carried, else as a
StoreOwnerError naming it.
"""

from __future__ import annotations

import io
import os
import pickle
import pwd
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


class StoreOwnerError(RuntimeError):
    """The work could not be done as the store's owner (or its error not carried back)."""


def owner_of(path: str | Path) -> tuple[int, int, Path]:
    """(uid, gid, the path they were read from): the file, or its nearest existing folder."""
    p = Path(path).expanduser().absolute()
    while True:
        try:
            st = p.stat()
            return st.st_uid, st.st_gid, p
        except FileNotFoundError:
            if p.parent == p:
                raise
            p = p.parent


def _become(uid: int, gid: int) -> None:
    """Drop root for good in this (child) process: the user's groups, then the user."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:  # an owner without a passwd entry: only the file's group
        os.setgroups([gid])
        os.setgid(gid)
    else:
        os.setgid(user.pw_gid)
        os.initgroups(user.pw_name, user.pw_gid)
    os.setuid(uid)


def _describe(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def as_owner(path: str | Path, fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs), run as the owner of the store file `path` when we are root."""
    if os.geteuid() != 0:
        return fn(*args, **kwargs)
    uid, gid, source = owner_of(path)
    if uid == 0:
        return fn(*args, **kwargs)
    who = f"{_describe(uid)} (the owner of {source})"
    for stream in (sys.stdout, sys.stderr):  # or the child would print our buffered output again
        stream.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(rfd)
            out, err = io.StringIO(), io.StringIO()  # what fn prints, printed again by the parent
            try:
                with redirect_stdout(out), redirect_stderr(err):
                    _become(uid, gid)
                    answer = (True, fn(*args, **kwargs))
            except BaseException as exc:  # carried to the parent, SystemExit too
                answer = (False, exc)
            try:
                data = pickle.dumps((*answer, out.getvalue(), err.getvalue()))
                pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
            except Exception as exc:
                what = answer[1] if not answer[0] else exc
                data = pickle.dumps((False, StoreOwnerError(f"as {who}: {type(what).__name__}: {what}"),
                                     out.getvalue(), err.getvalue()))
            with os.fdopen(wfd, "wb") as f:
                f.write(data)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise StoreOwnerError(f"the work on {path} as {who} ended without an answer "
                              f"(wait status {status})")
    ok, value, out, err = pickle.loads(data)
    sys.stdout.write(out)
    sys.stderr.write(err)
    if ok:
        return value
    if isinstance(value, PermissionError):
        raise StoreOwnerError(f"as {who}: {value}") from value
    raise value
