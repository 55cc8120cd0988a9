"""The OpenAPI documents (api/openapi.py) of the fog's and the cloud's app: they validate,
every route is in them, their limits and enums are the code's, and real answers match the
body schemas they declare (no undocumented key)."""

from __future__ import annotations

import copy
import re
import time
from types import SimpleNamespace

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from aquafog.api import city, create_app, meters, ranking
from aquafog.api import alerts as alerts_api
from aquafog.api import policy as policy_api
from aquafog.api.openapi import METHODS, api_rules, build, documented_methods
from aquafog.api.params import MAX_REASON
from aquafog.cloud import RoutingError
from aquafog.cloud import api as cloud_api
from aquafog.cloud.api import create_cloud_app
from aquafog.cloud.store import open_cloud_engine
from aquafog.cloud.view import CityView
from aquafog.config import CloudConfig, GatewayConfig
from aquafog.federation import MAX_K, CityMean, CityPolicy, FogInfo, Partial, period_key
from aquafog.gateway.accounting import Accounting
from aquafog.gateway.alerts import KINDS
from aquafog.gateway.health import HealthBatch
from aquafog.periods import Calendar, day_key
from aquafog.policy import MAX_FACTOR, MODES, PolicySettings
from aquafog.protocol import ALARMS, VALVE_STATES, Health, Reading
from aquafog.store import queries
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters

HOW = """add YAML after `---` to the view's docstring (backend/README.md 'Documenting a route'), e.g.:

    @bp.get("/things/<thing_id>")
    def get_thing(thing_id: str):
        \"\"\"One thing, by id.
        ---
        get:
          parameters:
          - {name: thing_id, in: path, required: true, schema: {type: string}}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: !const MAX_PAGE, default: 100}}
          responses:
            200: Thing          # a schema in api/schemas.py
            404: NotFound       # a shared error response
        \"\"\""""


@pytest.fixture(scope="module")
def fog_app(tmp_path_factory):
    cfg = GatewayConfig(db_path=str(tmp_path_factory.mktemp("fog") / "gw.db"))
    engine = open_engine(cfg.db_path)
    yield create_app(cfg, engine, SimpleNamespace())
    engine.dispose()


@pytest.fixture(scope="module")
def cloud_app(tmp_path_factory):
    engine = open_cloud_engine(f"sqlite:///{tmp_path_factory.mktemp('cloud') / 'cloud.db'}")
    yield create_cloud_app(CloudConfig(), SimpleNamespace(engine=engine))
    engine.dispose()


@pytest.fixture(params=["fog", "cloud"])
def app(request, fog_app, cloud_app):
    return fog_app if request.param == "fog" else cloud_app


def template(rule: str) -> str:
    """/api/v1/meters/<meter_id> -> /api/v1/meters/{meter_id} (also <int:n> -> {n})."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_the_document_validates(app):
    validate(build(app))


def test_the_document_is_served_at_api_v1_openapi_json(app):
    r = app.test_client().get("/api/v1/openapi.json")
    assert r.status_code == 200, (f"GET /api/v1/openapi.json answered {r.status_code} {r.get_data(as_text=True)}; "
                                  "it must be public: 'openapi.openapi_json': PUBLIC in api/access.py's ACCESS")
    assert r.get_json() == build(app)


def test_every_route_is_documented(app):
    doc = build(app)
    problems = []
    for rule in api_rules(app):
        path = template(rule.rule)
        view = app.view_functions[rule.endpoint]
        at = f"{view.__module__}.{view.__qualname__}"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() not in doc["paths"].get(path, {}):
                problems.append(f"{method} {path} (view {at}) is not in the OpenAPI document")
        for method in documented_methods(app, rule):
            if method not in (rule.methods or ()):
                problems.append(f"{path} (view {at}): the docstring documents {method}, which the route does "
                                f"not accept ({', '.join(sorted(rule.methods or ()))})")
    if problems:
        pytest.fail("\n".join(problems) + "\n\nTo document a route, " + HOW, pytrace=False)
    served = {(template(r.rule), m.lower()) for r in api_rules(app) for m in r.methods or ()}
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops if m in METHODS}
    assert documented <= served, f"documented but not served: {sorted(documented - served)}"


def test_every_operation_has_a_summary_and_declares_errors_with_the_shared_body(app):
    doc = build(app)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method.upper()} {path}: no summary (the docstring's first line)"
            assert any(code.startswith("2") for code in op["responses"]), f"{method.upper()} {path}: no 2xx"
            ok = [r["content"]["application/json"]["schema"] for c, r in op["responses"].items()
                  if c.startswith("2") and "application/json" in r.get("content", {})]
            for code, resp in op["responses"].items():
                if code[0] not in "45":
                    continue
                if "$ref" in resp:
                    resp = doc["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
                schema = resp["content"]["application/json"]["schema"]
                # an error is the shared body; a health check's 503 is its own 200 body, degraded
                assert schema == {"$ref": "#/components/schemas/Error"} or (code == "503" and schema in ok), \
                    f"{method.upper()} {path} {code}: errors answer the Error body (a shared response: BadRequest ...)"


def test_security_schemes_are_declared(app):
    schemes = build(app)["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["session"]["in"] == "cookie" and schemes["session"]["name"] == app.config["SESSION_COOKIE_NAME"]


def test_security_follows_the_access_table(app):
    access = pytest.importorskip("aquafog.api.access")
    doc = build(app)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            level = access.ACCESS.get(op["operationId"])
            where = f"{method.upper()} {path} ({op['operationId']}: {level})"
            assert op["x-access"] == (level or "none"), where
            if level == access.PUBLIC:
                assert op["security"] == [], where
            elif level is not None:
                assert op["security"] == [{"session": []}, {"bearer": []}], where
                assert op["responses"]["401"] == {"$ref": "#/components/responses/Unauthorized"}, where
                roles = {access.ADMIN: ["admin"], access.OPERATOR: ["admin", "operator"]}.get(
                    level, ["admin", "operator", "consumer"])
                assert op["x-roles"] == roles, where


def _params(doc, path, method="get") -> dict[str, dict]:
    out = {}
    for p in doc["paths"][path][method].get("parameters", []):
        if "$ref" in p:
            p = doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
        out[p["name"]] = p
    return out


def test_the_fog_documents_the_limits_and_enums_the_code_checks(fog_app):
    doc = build(fog_app)
    p = _params(doc, "/api/v1/meters")
    assert p["status"]["schema"]["enum"] == list(queries.METER_STATUSES)
    assert p["valve"]["schema"]["enum"] == list(VALVE_STATES)
    assert p["alarm"]["schema"]["enum"] == list(ALARMS)
    assert (p["limit"]["schema"]["minimum"], p["limit"]["schema"]["maximum"]) == (1, meters.MAX_PAGE)
    assert _params(doc, "/api/v1/meters/{meter_id}/readings")["limit"]["schema"]["maximum"] == meters.MAX_PAGE
    p = _params(doc, "/api/v1/ranking")
    assert p["n"]["schema"]["maximum"] == ranking.MAX_N
    assert p["period"]["schema"]["enum"] == list(ranking.PERIODS)
    assert _params(doc, "/api/v1/city/mean")["period"]["schema"]["enum"] == list(city.PERIODS)
    assert _params(doc, "/api/v1/policy/blocks")["limit"]["schema"]["maximum"] == policy_api.MAX_LISTED
    p = _params(doc, "/api/v1/alerts")
    assert p["state"]["schema"]["enum"] == list(alerts_api.STATES) and p["kind"]["schema"]["enum"] == list(KINDS)
    assert p["limit"]["schema"]["maximum"] == alerts_api.MAX_PAGE
    assert doc["components"]["schemas"]["Alert"]["properties"]["kind"]["enum"] == list(KINDS)
    assert _params(doc, "/api/v1/meters/{meter_id}")["meter_id"]["in"] == "path"
    body = doc["paths"]["/api/v1/meters/{meter_id}/valve"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ValveRequest"}
    valve = doc["components"]["schemas"]["ValveRequest"]
    assert valve["properties"]["state"]["enum"] == list(VALVE_STATES)
    assert valve["properties"]["reason"]["maxLength"] == MAX_REASON
    settings = doc["components"]["schemas"]["PolicySettings"]["properties"]
    assert settings["mode"]["enum"] == list(MODES) and settings["mean_factor"]["maximum"] == MAX_FACTOR


def test_the_cloud_documents_the_limits_and_enums_the_code_checks(cloud_app):
    doc = build(cloud_app)
    p = _params(doc, "/api/v1/city/ranking")
    assert p["n"]["schema"]["maximum"] == MAX_K and p["period"]["schema"]["enum"] == list(cloud_api.PERIODS)
    assert _params(doc, "/api/v1/city/mean")["period"]["schema"]["enum"] == list(cloud_api.PERIODS)
    assert _params(doc, "/api/v1/meters/{meter_id}/readings")["limit"]["schema"]["maximum"] == meters.MAX_PAGE


def test_bodies_shared_by_fog_and_cloud_are_the_same_components(fog_app, cloud_app):
    fog, cloud = build(fog_app), build(cloud_app)
    for name in ("Error", "ValveRequest", "PolicySettings"):
        assert fog["components"]["schemas"][name] == cloud["components"]["schemas"][name]
    assert fog["components"]["parameters"]["meter_id"] == cloud["components"]["parameters"]["meter_id"]
    for doc in (fog, cloud):
        put = doc["paths"]["/api/v1/policy"]["put"]["requestBody"]["content"]["application/json"]
        assert put["schema"] == {"$ref": "#/components/schemas/PolicySettings"}
        post = doc["paths"]["/api/v1/meters/{meter_id}/valve"]["post"]["requestBody"]["content"]["application/json"]
        assert post["schema"] == {"$ref": "#/components/schemas/ValveRequest"}


def test_a_docstring_constant_that_does_not_exist_names_the_route(fog_app):
    from aquafog.api.openapi import DocstringError, _split_docstring

    def view():
        """Broken.
        ---
        get:
          parameters:
          - {name: n, in: query, schema: {type: integer, maximum: !const NO_SUCH_LIMIT}}
        """
    with pytest.raises(DocstringError, match="/api/v1/x.*NO_SUCH_LIMIT"):
        _split_docstring(view, "/api/v1/x")


# --- real answers against the declared bodies ---------------------------------------------------
def strict(doc: dict) -> dict:
    """The components with additionalProperties false wherever an object lists its properties
    and says nothing else: an answer with a key the document does not name fails."""
    doc = copy.deepcopy(doc)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc["components"])
    return doc


def check_answer(doc: dict, path: str, method: str, resp) -> None:
    """The answer's body against the schema the document declares for its status."""
    op = doc["paths"][path][method]
    declared = op["responses"].get(str(resp.status_code))
    assert declared is not None, f"{method.upper()} {path} answered {resp.status_code}, not in the document"
    if "$ref" in declared:
        declared = doc["components"]["responses"][declared["$ref"].rsplit("/", 1)[1]]
    schema = declared["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": doc["components"]})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(resp.get_json())]
    assert not errors, f"{method.upper()} {path} {resp.status_code}:\n" + "\n".join(errors[:10])


try:
    from authz import authorize, cloud_token, fog_token
except ImportError:  # an API without authentication: nothing to send
    def authorize(client, token):
        return client

    def fog_token(engine):
        return ""

    cloud_token = fog_token


class FogServices:
    """The real writer (valve commands) and enforcer of test_policy's Fog; health and the
    city mean as the gateway's own would answer."""

    def __init__(self, fog):
        self.fog = fog

    def submit_valve(self, meter, state, reason, command_id):
        return self.fog.writer.submit_valve(meter, state, reason, command_id)

    def health(self):
        return {"status": "ok", "problems": [], "version": "0.1.0"}

    def city_mean(self, period):
        return CityMean(period, "2026-11", 3, 6000, ("north", "south"), 1_795_650_000_000)

    def policy(self):
        return self.fog.enforcer

    def alerts(self):
        from aquafog.gateway.alerts import AlertMonitor
        return AlertMonitor(self.fog.cfg, self.fog.engine, self.fog.writer)


@pytest.fixture
def fog_client(tmp_path):
    from test_policy import Fog
    fog = Fog(tmp_path)
    now = int(time.time())
    ids = ["m001", "m002"]
    add_meters(fog.engine, ids)
    acc = Accounting(Calendar("UTC"), fog.engine.dialect)
    with fog.engine.begin() as conn:
        acc.load(conn, ids)
        b = acc.begin_batch()
        for m in ids:
            b.reading(conn, acc.states[m], Reading(m, "aaaaaaaa", 0, now - 60, 0, 1000, 0, "open"), 0)
            b.reading(conn, acc.states[m], Reading(m, "aaaaaaaa", 1, now - 30, 500, 1500, 1500, "open"), 0)
        b.write(conn)
        hb = HealthBatch()
        hb.add(acc.states["m001"], Health("m001", "aaaaaaaa", "0.2.0", 86400, "watchdog", -67, 81234, 12, 3,
                                          "ntp", ("leak",)), now * 1000)
        hb.write(conn)
    fog.usage({"big": 5_000_000, "small": 1000})
    fog.policy(mode="enforce", cap_m3=1)
    fog.enforcer.tick()
    app = create_app(fog.cfg, fog.engine, FogServices(fog))
    yield authorize(app.test_client(), fog_token(fog.engine)), build(app)
    fog.stop()


def test_the_fogs_answers_match_the_document(fog_client):
    client, doc = fog_client
    doc = strict(doc)
    block = client.get("/api/v1/policy/blocks").get_json()["items"][0]
    assert block["meter"] == "big"
    assert [(a["kind"], a["meter"]) for a in client.get("/api/v1/alerts").get_json()["items"]] == [
        ("policy_block", "big"), ("leak", "m001")]
    for method, url, path, body in [
        ("get", "/api/v1/meters", "/api/v1/meters", None),
        ("get", "/api/v1/meters?limit=1", "/api/v1/meters", None),
        ("get", "/api/v1/meters?status=asleep", "/api/v1/meters", None),
        ("get", "/api/v1/meters/m001", "/api/v1/meters/{meter_id}", None),
        ("get", "/api/v1/meters/m002", "/api/v1/meters/{meter_id}", None),
        ("get", "/api/v1/meters/nope", "/api/v1/meters/{meter_id}", None),
        ("get", "/api/v1/meters/m001/readings?limit=1", "/api/v1/meters/{meter_id}/readings", None),
        ("get", "/api/v1/meters/big/commands", "/api/v1/meters/{meter_id}/commands", None),
        ("get", f"/api/v1/commands/{block['command_id']}", "/api/v1/commands/{command_id}", None),
        ("get", "/api/v1/commands/nope", "/api/v1/commands/{command_id}", None),
        ("post", "/api/v1/meters/m001/valve", "/api/v1/meters/{meter_id}/valve", {"state": "closed", "command_id": "op-1"}),
        ("post", "/api/v1/meters/m001/valve", "/api/v1/meters/{meter_id}/valve", {"state": "closed", "command_id": "op-1"}),
        ("post", "/api/v1/meters/m001/valve", "/api/v1/meters/{meter_id}/valve", {"state": "open", "command_id": "op-1"}),
        ("post", "/api/v1/meters/m001/valve", "/api/v1/meters/{meter_id}/valve", {"state": "ajar"}),
        ("get", "/api/v1/ranking?period=month", "/api/v1/ranking", None),
        ("get", "/api/v1/ranking?period=custom&from=2026-11-01&to=2026-11-30", "/api/v1/ranking", None),
        ("get", "/api/v1/health", "/api/v1/health", None),
        ("get", "/api/v1/ingest/stats", "/api/v1/ingest/stats", None),
        ("get", "/api/v1/city/mean", "/api/v1/city/mean", None),
        ("get", "/api/v1/policy", "/api/v1/policy", None),
        ("put", "/api/v1/policy", "/api/v1/policy", {"mode": "dry_run", "caps_m3": {"big": 2}, "exempt": ["m001"]}),
        ("put", "/api/v1/policy", "/api/v1/policy", {"mode": "sometimes"}),
        ("get", "/api/v1/policy/blocks?active=true", "/api/v1/policy/blocks", None),
        ("get", "/api/v1/alerts", "/api/v1/alerts", None),
        ("get", "/api/v1/alerts?state=open&kind=leak&limit=1", "/api/v1/alerts", None),
        ("get", "/api/v1/alerts?state=soon", "/api/v1/alerts", None),
        ("post", "/api/v1/alerts/1/ack", "/api/v1/alerts/{alert_id}/ack", None),
        ("post", "/api/v1/alerts/1/ack", "/api/v1/alerts/{alert_id}/ack", None),
        ("post", "/api/v1/alerts/999/ack", "/api/v1/alerts/{alert_id}/ack", None),
    ]:
        resp = client.open(url, method=method.upper(), json=body)
        check_answer(doc, path, method, resp)


@pytest.fixture
def cloud_client(tmp_path):
    cfg = CloudConfig(db_url=f"sqlite:///{tmp_path / 'cloud.db'}")
    engine = open_cloud_engine(cfg.db_url)
    day = day_key(Calendar(cfg.timezone).today(time.time()))
    view = CityView()
    for period in ("day", "month"):
        view.put(Partial("north", period, period_key(period, day), 1, 1, 3, 6000, 10,
                         (("m1", 3000), ("m2", 2000), ("m3", 1000))))
    view.regions["south"] = 0  # known, nothing sent yet
    routed = {"id": "op-1", "meter": "m1", "region": "north", "state": "closed", "reason": None, "status": "routed",
              "error": None, "created_ms": 1, "updated_ms": 1, "expires_ms": 2}
    info = FogInfo("north", "http://127.0.0.1:9", "0.1.0", "ok", (), 1,
                   {"mode": "dry_run", "source": "city", "updated_ms": 1, "over": 2, "blocked": 0})

    def owner(meter):
        raise RoutingError(503, "unavailable", "fog north has not announced its API URL")

    cloud = SimpleNamespace(
        engine=engine, view=view, directory={"m1": "north", "m2": "north"}, fogs={"north": (info, 2)},
        policy=CityPolicy(PolicySettings(mode="dry_run"), 1), owner=owner,
        health=lambda: {"status": "degraded", "problems": ["not connected to the cloud broker"]},
        set_policy=lambda s: (CityPolicy(s, 3), False),
        route_valve=lambda meter, state, reason, cid: (routed, True),
        command=lambda cid: routed if cid == "op-1" else None)
    app = create_cloud_app(cfg, cloud)
    yield authorize(app.test_client(), cloud_token(engine)), build(app)
    engine.dispose()


def test_the_clouds_answers_match_the_document(cloud_client):
    client, doc = cloud_client
    doc = strict(doc)
    for method, url, path, body in [
        ("get", "/api/v1/health", "/api/v1/health", None),
        ("get", "/api/v1/city/ranking?n=2", "/api/v1/city/ranking", None),
        ("get", "/api/v1/city/ranking?n=11&period=month", "/api/v1/city/ranking", None),
        ("get", "/api/v1/city/mean?period=month", "/api/v1/city/mean", None),
        ("get", "/api/v1/fogs", "/api/v1/fogs", None),
        ("get", "/api/v1/policy", "/api/v1/policy", None),
        ("put", "/api/v1/policy", "/api/v1/policy", {"mode": "enforce", "cap_m3": 30}),
        ("put", "/api/v1/policy", "/api/v1/policy", {"cap_m3": 0}),
        ("get", "/api/v1/meters/m1", "/api/v1/meters/{meter_id}", None),
        ("get", "/api/v1/meters/m1/readings", "/api/v1/meters/{meter_id}/readings", None),
        ("post", "/api/v1/meters/m1/valve", "/api/v1/meters/{meter_id}/valve", {"state": "closed"}),
        ("post", "/api/v1/meters/m1/valve", "/api/v1/meters/{meter_id}/valve", {"state": "closed", "x": 1}),
        ("get", "/api/v1/commands/op-1", "/api/v1/commands/{command_id}", None),
        ("get", "/api/v1/commands/op-2", "/api/v1/commands/{command_id}", None),
    ]:
        resp = client.open(url, method=method.upper(), json=body)
        check_answer(doc, path, method, resp)
