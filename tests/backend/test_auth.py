"""Users, roles, sessions and API tokens (accounts.py, api/access.py, api/auth.py), on the
fog's app with Flask's test client over a real SQLite store (unit: the gateway services
are a fake; the integration tests run the same checks against real processes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aquafog.accounts import AccountError, Accounts
from aquafog.api import create_app
from aquafog.api.access import ACCESS
from aquafog.api.auth import LoginLimiter
from aquafog.config import GatewayConfig
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters
from aquafog.store.schema import ACCOUNTS, commands

PASSWORD = "correct horse battery"


class Services:
    """Stands in for the running gateway: a valve command is written straight to the ledger table."""

    def __init__(self):
        self.engine = None
        self.n = 0

    def health(self):
        return {"status": "ok", "problems": []}

    def submit_valve(self, meter, state, reason, command_id):
        self.n += 1
        row = {"id": f"c-{self.n}", "meter_pk": int(meter[1:]), "kind": "valve", "state": state, "reason": reason,
               "origin": "api", "status": "queued", "attempts": 0, "created_ms": 1, "expires_ms": 2}
        with self.engine.begin() as conn:
            conn.execute(commands.insert().values(**row))
        return row, True

    def city_mean(self, period):
        return None

    def policy(self):
        return self  # replace() is never reached in these tests: the body is checked first

    def replace(self, settings):
        raise AssertionError("not expected")


@pytest.fixture
def fog(tmp_path):
    cfg = GatewayConfig(db_path=str(tmp_path / "gw.db"))
    engine = open_engine(cfg.db_path)
    add_meters(engine, ["m1", "m2", "m3"])
    accounts = Accounts(ACCOUNTS)
    with engine.begin() as conn:
        accounts.add_user(conn, "ada", "admin", PASSWORD)
        accounts.add_user(conn, "otto", "operator", PASSWORD)
        accounts.add_user(conn, "carla", "consumer", PASSWORD, ["m1"])
    services = Services()
    services.engine = engine
    app = create_app(cfg, engine, services)
    yield app, engine, accounts
    engine.dispose()


def login(client, username, password=PASSWORD):
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    return r.status_code, r.get_json()


def token(engine, accounts, username):
    with engine.begin() as conn:
        return accounts.add_token(conn, username, "test")


def test_nothing_but_health_login_and_the_document_is_open_without_credentials(fog):
    app, _, _ = fog
    c = app.test_client()
    assert c.get("/api/v1/health").status_code == 200
    assert c.get("/api/v1/openapi.json").status_code == 200
    for path in ("/api/v1/meters", "/api/v1/meters/m1", "/api/v1/ranking", "/api/v1/policy", "/api/v1/auth/me"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.get_json()["error"]["code"] == "unauthorized" and r.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_endpoint_of_both_apps_has_an_access_rule(fog, tmp_path):
    from aquafog.cloud.api import create_cloud_app
    from aquafog.cloud.store import open_cloud_engine
    from aquafog.config import CloudConfig

    class Cloud:
        engine = open_cloud_engine(f"sqlite:///{tmp_path / 'c.db'}")

    app, _, _ = fog
    cloud_app = create_cloud_app(CloudConfig(), Cloud())
    missing = [f"{r.endpoint} {r.rule}" for a in (app, cloud_app) for r in a.url_map.iter_rules()
               if r.endpoint not in ACCESS]
    assert missing == [], "add these endpoints to ACCESS in backend/aquafog/api/access.py"
    Cloud.engine.dispose()


def test_a_consumer_sees_only_their_own_meters_and_commands_nothing(fog):
    app, _, _ = fog
    c = app.test_client()
    status, body = login(c, "carla")
    assert status == 200 and body["user"]["meters"] == ["m1"] and body["user"]["role"] == "consumer"
    assert c.get("/api/v1/meters/m1").status_code == 200
    r = c.get("/api/v1/meters/m2")
    assert r.status_code == 403 and "not one of yours" in r.get_json()["error"]["message"]
    assert c.get("/api/v1/meters/m2/readings").status_code == 403
    assert c.get("/api/v1/meters").status_code == 403
    assert c.get("/api/v1/ranking").status_code == 403
    csrf = body["user"]["csrf_token"]
    r = c.post("/api/v1/meters/m1/valve", json={"state": "closed"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403 and "operator" in r.get_json()["error"]["message"]


def test_operators_read_and_command_and_only_admins_change_policies(fog):
    app, engine, accounts = fog
    _, otto = token(engine, accounts, "otto")
    _, ada = token(engine, accounts, "ada")
    c = app.test_client()
    h = {"Authorization": f"Bearer {otto}"}
    assert c.get("/api/v1/meters", headers=h).status_code == 200
    assert c.get("/api/v1/meters/m2", headers=h).status_code == 200
    assert c.post("/api/v1/meters/m2/valve", json={"state": "closed"}, headers=h).status_code == 202
    r = c.put("/api/v1/policy", json={"mode": "dry_run"}, headers=h)
    assert r.status_code == 403 and "admin" in r.get_json()["error"]["message"]
    r = c.put("/api/v1/policy", json={"mode": "bogus"}, headers={"Authorization": f"Bearer {ada}"})
    assert r.status_code == 400  # past the access check: the body is what is wrong


def test_a_session_change_needs_the_csrf_token_and_a_token_does_not(fog):
    app, engine, accounts = fog
    c = app.test_client()
    _, body = login(c, "otto")
    assert c.post("/api/v1/meters/m1/valve", json={"state": "closed"}).get_json()["error"]["code"] == "csrf"
    r = c.post("/api/v1/meters/m1/valve", json={"state": "closed"},
               headers={"X-CSRF-Token": body["user"]["csrf_token"]})
    assert r.status_code == 202
    assert c.get("/api/v1/auth/me").get_json()["user"]["csrf_token"] == body["user"]["csrf_token"]
    assert c.post("/api/v1/auth/logout", headers={"X-CSRF-Token": body["user"]["csrf_token"]}).status_code == 200
    assert c.get("/api/v1/auth/me").status_code == 401


def test_a_password_change_or_disabling_ends_sessions_and_tokens(fog):
    app, engine, accounts = fog
    c = app.test_client()
    login(c, "otto")
    tid, tok = token(engine, accounts, "otto")
    with engine.begin() as conn:
        accounts.set_password(conn, "otto", "another long password")
    r = c.get("/api/v1/auth/me")
    assert r.status_code == 401 and "session has ended" in r.get_json()["error"]["message"]
    assert login(c, "otto")[0] == 401  # the old password
    assert login(c, "otto", "another long password")[0] == 200
    assert c.get("/api/v1/meters", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    with engine.begin() as conn:
        accounts.disable(conn, "otto")
    assert c.get("/api/v1/meters", headers={"Authorization": f"Bearer {tok}"}).status_code == 401
    assert c.get("/api/v1/auth/me").status_code == 401
    assert login(c, "otto", "another long password")[0] == 401


def test_tokens_are_shown_once_stored_hashed_listed_and_revoked(fog):
    app, engine, accounts = fog
    _, ada = token(engine, accounts, "ada")
    c = app.test_client()
    h = {"Authorization": f"Bearer {ada}"}
    r = c.post("/api/v1/auth/tokens", json={"name": "billing export"}, headers=h)
    assert r.status_code == 201
    new = r.get_json()
    with engine.connect() as conn:
        stored = conn.execute(ACCOUNTS["api_tokens"].select()).mappings().all()
    assert all(new["token"].split("_")[2] not in str(dict(s)) for s in stored)  # only a hash is kept
    names = {t["name"] for t in c.get("/api/v1/auth/tokens", headers=h).get_json()["items"]}
    assert names == {"test", "billing export"}
    assert c.get("/api/v1/meters", headers={"Authorization": f"Bearer {new['token']}"}).status_code == 200
    assert c.delete(f"/api/v1/auth/tokens/{new['id']}", headers=h).status_code == 200
    r = c.get("/api/v1/meters", headers={"Authorization": f"Bearer {new['token']}"})
    assert r.status_code == 401 and "not valid" in r.get_json()["error"]["message"]
    wrong_secret = ada[:-1] + ("1" if ada[-1] == "0" else "0")  # the same id, one hex digit off
    for bad in ("Basic abc", "Bearer aft_nothex_x", f"Bearer {wrong_secret}"):
        assert c.get("/api/v1/meters", headers={"Authorization": bad}).status_code == 401


def test_login_is_rate_limited_per_user_and_address():
    now = [0.0]
    lim = LoginLimiter(failures=3, window_s=60, clock=lambda: now[0])
    keys = ["user:x", "addr:1.2.3.4"]
    for _ in range(3):
        assert lim.wait_s(keys) == 0
        lim.failed(keys)
    assert lim.wait_s(keys) == 60
    assert lim.wait_s(["user:y", "addr:1.2.3.4"]) == 60  # same address, another name
    assert lim.wait_s(["user:x", "addr:5.6.7.8"]) == 60  # same name, another address
    now[0] = 61
    assert lim.wait_s(keys) == 0


def test_failed_logins_get_429_with_retry_after_even_with_the_right_password(fog):
    app, _, _ = fog
    c = app.test_client()
    for _ in range(5):
        assert login(c, "ada", "wrong password!!")[0] == 401
    r = c.post("/api/v1/auth/login", json={"username": "ada", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert r.get_json()["error"]["code"] == "too_many_attempts"


def test_bad_accounts_are_refused_naming_the_field(fog):
    _, engine, accounts = fog
    cases = [(("BAD NAME", "operator", PASSWORD), "username"), (("x", "root", PASSWORD), "role"),
             (("x", "operator", "short"), "password"), (("x", "operator", PASSWORD, ["m1"]), "meters"),
             (("ada", "admin", PASSWORD), "username"), (("y", "consumer", PASSWORD, ["Bad!"]), "meters")]
    for args, field in cases:
        with pytest.raises(AccountError) as e, engine.begin() as conn:
            accounts.add_user(conn, *args)
        assert e.value.field == field, args


def test_the_cli_makes_the_first_admin_and_a_token_and_has_no_default_password(tmp_path):
    db = str(tmp_path / "gw.db")

    def aquafog(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "aquafog", *args], input=stdin, capture_output=True, text=True)

    r = aquafog("user", "add", "--db", db, "ada", "--role", "admin")
    assert r.returncode != 0 and "no default password" in r.stderr
    r = aquafog("user", "add", "--db", db, "ada", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0 and "ada added as admin" in r.stdout
    r = aquafog("user", "add", "--db", db, "carla", "--role", "consumer", "--meters", "m1,m2", "--generate")
    assert r.returncode == 0 and "password for carla: " in r.stdout
    r = aquafog("token", "add", "--db", db, "ada", "backup script", "-q")
    assert r.returncode == 0 and r.stdout.startswith("aft_")
    listed = aquafog("user", "list", "--db", db).stdout
    assert "ada" in listed and "consumer" in listed and "m1,m2" in listed
    r = aquafog("user", "add", "--db", db, "otto", "--role", "operator", "--password-stdin", stdin="short\n")
    assert r.returncode == 2 and "at least 12 characters" in r.stderr
