"""Store work as the store's owner (aquafog/store/owner.py): run as root, the commands that
open a store leave every file they create to the store's owner, as on an installed fog
(the gateway's store belongs to the system user `aquafog`). Here the owner is `nobody`,
or a uid without a passwd entry."""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from aquafog.cli import main as aquafog
from aquafog.store.owner import StoreOwnerError, as_owner, owner_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to the store's owner needs root")

NOBODY = pwd.getpwnam("nobody")
# Loaded before the switch to `nobody`: on a test machine whose Python lives under /root
# (0700), nobody could not read the standard library. An installed fog's Python is in /usr.
importlib.import_module("sqlite3")


@pytest.fixture
def root():
    """A folder other users can reach (pytest's own are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="aquafog-owner-"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def nobodys(root) -> Path:
    """A store folder as an installed fog has it: its service user's, 0750."""
    d = root / "var-lib-aquafog"
    d.mkdir(mode=0o750)
    os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)
    return d


def owners(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_uid for p in folder.iterdir()}


def test_a_new_store_and_its_wal_belong_to_the_folders_owner(nobodys):
    def make(db: Path):
        from aquafog.store.engine import open_engine
        engine = open_engine(db)
        try:
            with engine.connect() as conn:  # the -wal and -shm exist while a connection is open
                conn.exec_driver_sql("SELECT count(*) FROM meters").scalar()
                return os.geteuid(), owners(db.parent)
        finally:
            engine.dispose()

    euid, while_open = as_owner(nobodys / "gateway.db", make, nobodys / "gateway.db")
    assert euid == NOBODY.pw_uid
    assert while_open == {"gateway.db": NOBODY.pw_uid, "gateway.db-wal": NOBODY.pw_uid,
                          "gateway.db-shm": NOBODY.pw_uid}
    assert set(owners(nobodys).values()) == {NOBODY.pw_uid}


def test_an_existing_file_decides_and_an_owner_without_a_passwd_entry_works(root):
    f = root / "store.db"
    f.write_text("")
    os.chown(f, 4321, 4322)
    assert owner_of(f) == (4321, 4322, f)
    assert owner_of(root / "not-yet" / "store.db") == (0, root.stat().st_gid, root)
    ids = as_owner(f, lambda: (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()))
    assert ids == (4321, 4321, 4322, 4322, [4322])


def test_the_users_groups_are_its_own(nobodys):
    got = as_owner(nobodys / "x.db", lambda: (os.getegid(), sorted(os.getgroups())))
    assert got == (NOBODY.pw_gid, sorted({NOBODY.pw_gid, *os.getgrouplist("nobody", NOBODY.pw_gid)}))


def test_a_root_owned_store_is_worked_on_here(root):
    assert as_owner(root / "store.db", os.getpid) == os.getpid()


class Unbuildable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def raise_(exc):
    raise exc


def test_errors_come_back(nobodys):
    with pytest.raises(ValueError, match="meter id 'Bad'"):
        as_owner(nobodys / "x.db", raise_, ValueError("meter id 'Bad'"))
    with pytest.raises(SystemExit, match="no password"):
        as_owner(nobodys / "x.db", raise_, SystemExit("no password"))
    with pytest.raises(StoreOwnerError, match="Unbuildable: a and b"):  # pickles, but cannot be rebuilt
        as_owner(nobodys / "x.db", raise_, Unbuildable("a", "b"))
    with pytest.raises(StoreOwnerError, match=rf"as user nobody \(the owner of {nobodys}\): .*Permission denied"):
        as_owner(nobodys / "x.db", lambda: Path("/root/.aquafog-test").write_text("x"))
    assert not Path("/root/.aquafog-test").exists()


# -- the commands that open a store --------------------------------------------------------------
def test_init_db_and_meter_add_as_root_leave_the_store_to_its_owner(nobodys, capsys):
    db = nobodys / "gateway.db"
    assert aquafog(["init-db", "--db", str(db)]) == 0
    assert aquafog(["meter", "add", "--db", str(db), "m1", "m2"]) == 0
    assert aquafog(["meter", "list", "--db", str(db)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["m1\tnever seen\t-", "m2\tnever seen\t-"]
    assert aquafog(["meter", "add", "--db", str(db), "Bad!"]) == 2  # the child's ValueError, as before
    assert "aquafog meter add:" in capsys.readouterr().err
    assert set(owners(nobodys).values()) == {NOBODY.pw_uid}, owners(nobodys)


def test_users_and_tokens_as_root_at_a_fog_and_at_the_cloud(nobodys, capsys):
    db = nobodys / "gateway.db"
    assert aquafog(["user", "add", "--db", str(db), "ana", "--role", "admin", "--generate"]) == 0
    assert aquafog(["token", "add", "--db", str(db), "ana", "billing", "-q"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("aft_")
    assert aquafog(["user", "add", "--db", str(db), "ana", "--role", "admin", "--generate"]) == 2  # exists
    cloud = nobodys / "cloud.db"
    assert aquafog(["user", "add", "--cloud", "--db-url", f"sqlite:///{cloud}", "bia", "--role", "admin",
                    "--generate"]) == 0
    assert aquafog(["user", "list", "--cloud", "--db-url", f"sqlite:///{cloud}"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("bia ")
    assert cloud.exists() and set(owners(nobodys).values()) == {NOBODY.pw_uid}, owners(nobodys)
