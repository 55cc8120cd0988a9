"""The web UI's server side (backend/aquafog/web): which page a browser gets for its session
and role, what each page is told (the boot block), the security headers, the assets, and
that nothing is loaded from another site. The pages' behaviour is tested in a real browser
(tests/e2e/test_dashboard.py)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from aquafog import web
from test_auth import PASSWORD, fog, login  # noqa: F401  (the fog app fixture)

WEB = Path(web.__file__).parent
PAGES = ("/", "/meters/m1", "/alerts", "/policy", "/portal")


def boot(resp) -> dict:
    m = re.search(r'<script type="application/json" id="boot">(.*?)</script>', resp.get_data(as_text=True), re.S)
    assert m, "the page has no boot block"
    return json.loads(m.group(1))


def test_without_a_session_every_page_sends_the_browser_to_the_login_page(fog):  # noqa: F811
    c = fog[0].test_client()
    for path in PAGES:
        r = c.get(path)
        assert r.status_code == 302 and r.headers["Location"] == f"/login?next={path}", path
    r = c.get("/login")
    assert r.status_code == 200 and boot(r)["user"] is None
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in r.get_data(as_text=True)


def test_an_operator_gets_the_dashboard_and_is_told_who_they_are_and_what_this_app_serves(fog):  # noqa: F811
    c = fog[0].test_client()
    status, body = login(c, "otto")
    assert status == 200
    r = c.get("/")
    assert r.status_code == 200
    b = boot(r)
    assert b["page"] == "dashboard" and b["site"]["kind"] == "fog"
    assert b["user"] == {"username": "otto", "role": "operator", "meters": []}
    assert b["csrf"] == body["user"]["csrf_token"]
    assert b["features"]["ranking"]["roles"] == ["admin", "operator"]
    assert b["features"]["usage"]["roles"] == ["admin", "operator", "consumer"]
    assert "city_ranking" not in b["features"]  # the cloud's
    for path in PAGES:
        assert c.get(path).status_code == 200, path
    # after logging in, back where the browser was going; never to another site
    assert c.get("/login?next=/meters/m2").headers["Location"] == "/meters/m2"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        assert c.get("/login", query_string={"next": evil}).headers["Location"] == "/", evil
    c.post("/api/v1/auth/logout", headers={"X-CSRF-Token": body["user"]["csrf_token"]})
    assert c.get("/").headers["Location"] == "/login?next=/"


def test_a_consumer_is_sent_to_the_portal_and_another_meters_page_is_left_to_the_api(fog):  # noqa: F811
    c = fog[0].test_client()
    login(c, "carla")
    for path in ("/", "/alerts", "/policy"):
        r = c.get(path)
        assert r.status_code == 302 and r.headers["Location"] == "/portal", path
    assert c.get("/login").headers["Location"] == "/portal"
    b = boot(c.get("/portal"))
    assert b["user"] == {"username": "carla", "role": "consumer", "meters": ["m1"]}
    assert "ranking" in b["features"]  # served here, but not for this role (roles say so)
    # the page is a shell; the data behind it is refused by the API
    r = c.get("/meters/m2")
    assert r.status_code == 200 and boot(r)["meter"] == "m2"
    assert c.get("/api/v1/meters/m2").status_code == 403


def test_a_session_that_ended_is_a_login_again(fog):  # noqa: F811
    app, engine, accounts = fog
    c = app.test_client()
    login(c, "otto")
    with engine.begin() as conn:
        accounts.set_password(conn, "otto", PASSWORD + "!")
    assert c.get("/").headers["Location"] == "/login?next=/"


def test_pages_carry_a_content_security_policy_that_keeps_everything_on_this_server(fog):  # noqa: F811
    c = fog[0].test_client()
    r = c.get("/login")
    csp = r.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                      "frame-ancestors 'none'"):
        assert directive in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cache-Control"] == "no-store"  # the boot block holds the CSRF token


def test_assets_are_served_here_and_reference_nothing_elsewhere(fog):  # noqa: F811
    c = fog[0].test_client()
    files = sorted(p for p in (WEB / "static").iterdir() if p.is_file())
    assert {p.name for p in files} >= {"app.css", "common.js", "charts.js", "favicon.svg"}
    for p in files:
        with c.get(f"/assets/{p.name}") as r:  # a file response: closed, or its file stays open
            assert r.status_code == 200 and r.headers["Cache-Control"] == "no-cache", p.name
        text = p.read_text()
        # the SVG namespace is a name, not a download
        urls = [u for u in re.findall(r"https?://[^\s\"'`)]+", text) if u != "http://www.w3.org/2000/svg"]
        assert urls == [], f"{p.name} refers to {urls}"
        for imp in re.findall(r'from\s+"([^"]+)"', text):
            assert imp.startswith("./") and (WEB / "static" / imp[2:]).is_file(), f"{p.name} imports {imp}"
    for t in (WEB / "templates").iterdir():
        text = t.read_text()
        assert not re.search(r'(src|href)="(https?:)?//', text), t.name
        for name in re.findall(r"filename='([^']+)'", text):
            assert (WEB / "static" / name).is_file(), f"{t.name} links {name}"
    # each page's module exists
    for page in ("login", "dashboard", "meter", "alerts", "policy", "portal"):
        assert (WEB / "static" / f"{page}.js").is_file() and (WEB / "templates" / f"{page}.html").is_file()
    with c.get("/favicon.ico") as r:
        assert r.status_code == 200 and r.mimetype == "image/svg+xml"


def test_the_cloud_serves_the_same_pages_for_the_city(tmp_path):
    from aquafog.accounts import Accounts
    from aquafog.cloud.api import create_cloud_app
    from aquafog.cloud.store import ACCOUNTS, open_cloud_engine
    from aquafog.config import CloudConfig

    engine = open_cloud_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.begin() as conn:
        Accounts(ACCOUNTS).add_user(conn, "olga", "operator", PASSWORD)
    app = create_cloud_app(CloudConfig(), SimpleNamespace(engine=engine))
    c = app.test_client()
    assert c.get("/").headers["Location"] == "/login?next=/"
    login(c, "olga")
    b = boot(c.get("/"))
    assert b["site"]["kind"] == "cloud"
    assert {"city_ranking", "city_mean"} <= set(b["features"]) and "ranking" not in b["features"]
    assert "ranking_live" not in b["features"]  # the cloud polls its ranking
    engine.dispose()


def test_the_package_ships_the_pages_and_assets():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "backend" / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["aquafog"]
    assert "web/static/*" in globs and "web/templates/*" in globs
    assert all(p.is_file() for p in (WEB / "static").iterdir()), "static/ must stay flat for the glob"


@pytest.mark.parametrize("target,expected", [("/meters/m1?x=1", "/meters/m1?x=1"), ("", None), ("http://x/", None),
                                             ("//x", None), ("/\\x", None), ("portal", None)])
def test_safe_next(target, expected):
    assert web._safe_next(target) == expected


def test_every_page_names_the_version_in_its_footer(fog):  # noqa: F811
    from aquafog import __version__
    c = fog[0].test_client()
    assert f'<footer class="foot">AquaFog {__version__}</footer>' in c.get("/login").get_data(as_text=True)
