"""The web UI: the operator's dashboard and the consumer's portal, one codebase served by
each fog (its region) and by the cloud (the city) at `/` (docs/operate.md "The dashboard").

Pages are HTML shells (templates/) whose JavaScript modules (static/: no framework, no
build step, nothing fetched from another site) call the JSON API under /api/v1 with the
session cookie. The pages themselves are public in the access table: a page without a
session sends the browser to /login, a consumer on an operator's page goes to the portal;
the data behind every page is protected by the API's own access rules (api/access.py).

Each page gets a small JSON "boot" block: who is logged in (name, role, own meters), the
session's CSRF token, whether this is a fog or the cloud, and which API features this app
serves (found in its URL map, so a feature that lands later, such as the alerts, lights up
without a change here; until then the page says it is not available instead of asking).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, send_from_directory, session, url_for
from werkzeug.exceptions import MethodNotAllowed, NotFound

from .. import __version__


bp = Blueprint("web", __name__, static_folder="static", static_url_path="/assets", template_folder="templates")

OPERATOR_PAGES = ("dashboard", "alerts", "policy")

# The one policy every page is served with: scripts, styles, images and connections only from
# this server (the no-CDN rule, enforced by the browser), no framing, no inline scripts.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")

# What the pages may use, by a route of this app: (feature, method, an example path).
FEATURES = (
    ("ranking", "GET", "/api/v1/ranking"),
    ("ranking_live", "GET", "/api/v1/ranking/live"),
    ("city_ranking", "GET", "/api/v1/city/ranking"),
    ("city_mean", "GET", "/api/v1/city/mean"),
    ("fogs", "GET", "/api/v1/fogs"),
    ("meter_live", "GET", "/api/v1/meters/m/live"),
    ("readings", "GET", "/api/v1/meters/m/readings"),
    ("commands", "GET", "/api/v1/meters/m/commands"),
    ("usage", "GET", "/api/v1/meters/m/usage"),
    ("bill", "GET", "/api/v1/meters/m/bill"),
    ("alerts", "GET", "/api/v1/alerts"),
    ("policy_blocks", "GET", "/api/v1/policy/blocks"),
)


def _features() -> dict[str, dict]:
    """{feature: {"roles": [...]}} for each feature this app serves, with who may call it."""
    from ..api.access import ACCESS, ADMIN, OPERATOR, PUBLIC
    cached = current_app.extensions.get("aquafog_web_features")
    if cached is not None:
        return cached
    adapter = current_app.url_map.bind("localhost")
    out = {}
    for name, method, path in FEATURES:
        try:
            endpoint, _ = adapter.match(path, method=method)
        except (NotFound, MethodNotAllowed):
            continue
        level = ACCESS.get(endpoint)
        if level is None:
            continue  # closed until it has an access rule
        roles = {ADMIN: ["admin"], OPERATOR: ["admin", "operator"]}.get(level, ["admin", "operator", "consumer"])
        out[name] = {"roles": roles, "public": level == PUBLIC}
    current_app.extensions["aquafog_web_features"] = out
    return out


def _user():
    """The user of this browser's session, or None (no session, ended, or disabled)."""
    found = current_app.extensions.get("aquafog_accounts")
    uid = session.get("uid")
    if found is None or uid is None:
        return None
    accounts, engine = found
    with engine.connect() as conn:
        user = accounts.user(conn, uid)
    if user is None or user.session_epoch != session.get("epoch"):
        return None
    return user


def _site() -> dict:
    """Which app this is: a fog (its region, if any) or the city's cloud."""
    cfg = current_app.extensions.get("aquafog_web_site") or {}
    return {"kind": cfg.get("kind", "fog"), "region": cfg.get("region") or None,
            "name": cfg.get("name") or "AquaFog"}


def _home(user) -> str:
    return url_for("web.portal") if user.role == "consumer" else url_for("web.dashboard")


def _safe_next(target: str | None) -> str | None:
    """A local path to go back to after logging in, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


def _page(template: str, page: str, user, **extra):
    boot = {
        "page": page, "root": request.script_root, "site": _site(), "features": _features(),
        "user": None if user is None else {"username": user.username, "role": user.role,
                                           "meters": sorted(user.meters)},
        "csrf": session.get("csrf") if user is not None else None,
        **extra,
    }
    resp = current_app.make_response(render_template(template, boot=boot, page=page, user=user, site=boot["site"],
                                                     features=boot["features"], version=__version__))
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    return resp


def _login_redirect():
    return redirect(url_for("web.login", next=request.full_path.rstrip("?")))


def _require(operator: bool = False):
    """The user for a page, or the redirect: to /login without a session, to the portal for a
    consumer on an operator's page."""
    user = _user()
    if user is None:
        return None, _login_redirect()
    if operator and user.role == "consumer":
        return None, redirect(url_for("web.portal"))
    return user, None


@bp.get("/")
def dashboard():
    """The operator's dashboard: the top-N table (live at a fog), alerts.
    ---
    get:
      tags: [web]
      responses:
        200: Page
        302: ToLogin
    """
    user, away = _require(operator=True)
    return away or _page("dashboard.html", "dashboard", user)


@bp.get("/login")
def login():
    """The login page (a session goes on to `next`, or its home page).
    ---
    get:
      tags: [web]
      responses:
        200: Page
        302: {description: a session is sent on to `next` or its home page}
    """
    user = _user()
    target = _safe_next(request.args.get("next"))
    if user is not None:
        return redirect(target or _home(user))
    return _page("login.html", "login", None, next=target)


@bp.get("/meters/<meter_id>")
def meter(meter_id: str):
    """A meter's page: live flow and register charts, block and unblock, commands, alerts.
    ---
    get:
      tags: [web]
      parameters:
      - {name: meter_id, in: path, required: true, schema: {type: string}}
      responses:
        200: Page
        302: ToLogin
    """
    user, away = _require()
    if away:
        return away
    # the page is the same for any id: the API says whether there is such a meter and whether this
    # user may see it (the id is only ever written into the page as escaped text)
    return _page("meter.html", "meter", user, meter=meter_id[:64])


@bp.get("/alerts")
def alerts():
    """The alerts list, with acknowledge.
    ---
    get:
      tags: [web]
      responses:
        200: Page
        302: ToLogin
    """
    user, away = _require(operator=True)
    return away or _page("alerts.html", "alerts", user)


@bp.get("/policy")
def policy():
    """The consumption policy: settings (admins change them) and the latest evaluation.
    ---
    get:
      tags: [web]
      responses:
        200: Page
        302: ToLogin
    """
    user, away = _require(operator=True)
    return away or _page("policy.html", "policy", user)


@bp.get("/portal")
def portal():
    """The consumer's portal: own consumption by hour, day and month, the bill, leak warnings.
    ---
    get:
      tags: [web]
      responses:
        200: Page
        302: ToLogin
    """
    user, away = _require()
    return away or _page("portal.html", "portal", user)


@bp.get("/favicon.ico")
def favicon():
    """The site icon.
    ---
    get:
      tags: [web]
      responses:
        200: {description: an SVG icon, content: {image/svg+xml: {schema: {type: string}}}}
    """
    return send_from_directory(bp.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=86400)


@bp.after_request
def _cache(resp):
    if request.endpoint in ("web.static", "web.favicon"):
        # revalidated (ETag) on every load: an updated gateway never runs yesterday's script
        resp.headers["Cache-Control"] = "no-cache" if request.endpoint == "web.static" else "max-age=86400"
    return resp


def register(app, kind: str, region: str | None = None, name: str | None = None) -> None:
    """Serve the web UI at / of `app`: kind "fog" (region: the fog's) or "cloud"."""
    app.extensions["aquafog_web_site"] = {"kind": kind, "region": region, "name": name}
    app.register_blueprint(bp)
