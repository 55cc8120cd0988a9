"""The fog's HTTP API fuzzed with schemathesis against the OpenAPI document it serves
(GET /api/v1/openapi.json, built from the code): for every documented operation, generated
requests (valid and invalid parameters and bodies) must get no 5xx, and every answer must
match the document (its status code is declared, its body matches the declared schema).

Real: the Flask app (create_app), a SQLite store with 30 meters, their readings, a health
report with alarms, open alerts, a policy with a block and its close command, the admin API
token the requests carry, the writer thread (valve commands, alert acks, policy changes),
the enforcer, the alert monitor and the live hub, and the gateway's own GatewayServices
methods (aquafog.gateway.service.Gateway's, borrowed). Fakes: the outgoing MQTT
connection (test_writer.FakePublisher: records and 'PUBACKs' at once), the receiver
process (only its "connected" event, so health answers 200 ok: a degraded gateway's 503
is by design, and not_a_server_error would count it) and the cloud link (a city mean as
the cloud sends it).

Excluded, because they cannot be fuzzed in-process:
- GET /api/v1/meters/{meter_id}/live and /api/v1/ranking/live: server-sent-event streams
  that only end when the client leaves; the WSGI client reads a body to its end, so a
  valid request never returns (tests/backend/test_live.py tests them).
Everything else is fuzzed, with the admin's token on every request:
- login, with the rate limiter reset before each case: otherwise after 5 wrong passwords
  every later login is 429 and the password check is never reached again;
- the web pages (a bearer token is not a session, so they answer the login page or a
  redirect to it, as documented);
- logout and token revocation (the token the requests carry is never revoked: token ids
  are random, and the only real one offered is a spare's).
Two passes: schemathesis's generated cases (hypothesis; valid and invalid parameters and
bodies, EXAMPLES per operation and mode), and its coverage phase (each parameter's
boundary values and just past them, missing and mistyped parts, unexpected methods).
Half the time a path parameter names a real meter, command, alert or token, and a login
a real user, so the code behind them is reached and not only the 404. Run with -s for the
count of requests and statuses per operation.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance, status_code_conformance)

from sqlalchemy import select  # noqa: E402

from aquafog.accounts import Accounts  # noqa: E402
from aquafog.api import create_app  # noqa: E402
from aquafog.federation import CityMean  # noqa: E402
from aquafog.gateway.accounting import Accounting  # noqa: E402
from aquafog.gateway.alerts import AlertMonitor  # noqa: E402
from aquafog.gateway.health import HealthBatch  # noqa: E402
from aquafog.gateway.live import LiveHub  # noqa: E402
from aquafog.gateway.service import Gateway  # noqa: E402
from aquafog.periods import Calendar  # noqa: E402
from aquafog.protocol import Health, Reading  # noqa: E402
from aquafog.store.registry import add_meters  # noqa: E402
from aquafog.store.schema import ACCOUNTS, alerts, commands  # noqa: E402

from authz import fog_token  # noqa: E402
from test_openapi import strict  # noqa: E402
from test_policy import Fog  # noqa: E402

TARIFFS = Path(__file__).parents[2] / "backend" / "tariff.example.toml"
LOGIN = ("fuzz-operator", "fuzz-operator-password-1")
EXAMPLES = int(os.environ.get("AQUAFOG_FUZZ_EXAMPLES", "40"))  # per operation and mode; more for a longer hunt
STREAMS = r"/live$"
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


class Services:
    """The gateway's own GatewayServices (Gateway's methods) over a real writer, enforcer,
    alert monitor and live hub; the MQTT side and the cloud link are fakes."""

    submit_valve = Gateway.submit_valve
    health = Gateway.health
    city_mean = Gateway.city_mean
    alerts = Gateway.alerts
    policy = Gateway.policy
    live = Gateway.live

    def __init__(self, fog: Fog):
        self.cfg, self.writer, self.enforcer, self.events = fog.cfg, fog.writer, fog.enforcer, fog.events
        self.publisher = fog.pub
        self.live_hub = LiveHub(fog.cfg.live_max_clients)
        fog.writer.live = self.live_hub
        self.alert_monitor = AlertMonitor(fog.cfg, fog.engine, fog.writer)
        now_ms = int(time.time() * 1000)
        self.cloudlink = type("FakeCloudLink", (), {})()
        self.cloudlink.last_error = None
        self.cloudlink.city_mean = {"day": CityMean("day", "2026-11-26", 3, 6000, ("north", "south"), now_ms),
                                    "month": CityMean("month", "2026-11", 0, 0, ("north",), now_ms)}
        self.started_at = time.time()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    fog = Fog(tmp_path_factory.mktemp("fuzz"))
    now = int(time.time())
    ids = [f"m{i:03d}" for i in range(1, 31)]
    add_meters(fog.engine, ids)
    acc = Accounting(Calendar("UTC"), fog.engine.dialect)
    with fog.engine.begin() as conn:
        acc.load(conn, ids)
        b = acc.begin_batch()
        for i, m in enumerate(ids, 1):
            b.reading(conn, acc.states[m], Reading(m, "aaaaaaaa", 0, now - 60, 0, 1000, 0, "open"), 0)
            b.reading(conn, acc.states[m], Reading(m, "aaaaaaaa", 1, now - 30, i * 100, 1000 + i * 100, 1500,
                                                   "open"), 0)
        b.write(conn)
        hb = HealthBatch()
        for m, alarms in (("m001", ("leak",)), ("m002", ("leak", "burst")), ("m003", ())):
            hb.add(acc.states[m], Health(m, "aaaaaaaa", "0.2.0", 86400, "watchdog", -67, 81234, 12, 3, "ntp",
                                         alarms), now * 1000)
        hb.write(conn)
    fog.usage({"big": 5_000_000, "small": 1000})
    fog.policy(mode="enforce", cap_m3=1)
    fog.enforcer.tick()  # blocks "big": a policy block, its close command, a policy_block alert
    fog.writer.submit_valve("m004", "closed", "fuzz fixture", "op-1")
    fog.events.put(("rx", "connected", 1))  # what the receiver process sends once subscribed
    deadline = time.time() + 5
    while fog.writer.stats.rx_state != "connected" and time.time() < deadline:
        time.sleep(0.01)
    services = Services(fog)
    cfg = dataclasses.replace(fog.cfg, tariff_file=str(TARIFFS))  # bills too
    services.cfg = cfg
    app = create_app(cfg, fog.engine, services)
    token = fog_token(fog.engine, username="fuzz-admin")
    with fog.engine.begin() as conn:
        spare = Accounts(ACCOUNTS).add_token(conn, "fuzz-admin", "spare")[0]  # one DELETE may revoke
        Accounts(ACCOUNTS).add_user(conn, "fuzz-operator", "operator", LOGIN[1], ())
        cids = list(conn.execute(select(commands.c.id)).scalars())
        alert_ids = [str(a) for a in conn.execute(select(alerts.c.id)).scalars()]
    known = {"meter_id": [*ids, "big", "small"], "command_id": cids, "alert_id": alert_ids, "token_id": [spare]}
    yield app, token, known
    services.live_hub.close()
    fog.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed):
    """The document the app serves, strict: an object that lists its properties may have no
    other (test_openapi.strict), so an undocumented key in an answer is a violation too."""
    app = fuzzed[0]
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(strict(doc))
    schema.app = app  # requests go to the app in-process (as from_wsgi's)
    return schema


def _operations() -> list[str]:
    """The document's operations, as schemathesis labels them ("GET /api/v1/meters"), from an
    app without a store (enough to build the document); the live streams left out."""
    from types import SimpleNamespace

    from aquafog.api.openapi import METHODS, build
    from aquafog.config import GatewayConfig
    doc = build(create_app(GatewayConfig(db_path=":memory:"), None, SimpleNamespace()))
    return [f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops
            if m in METHODS and not re.search(STREAMS, p)]


def seed(case, known: dict, coin, pick) -> None:
    """Random ids are all unknown (404): when `coin()`, a path parameter names a real meter,
    command, alert or token, and a login body a real user, so the code behind them is reached."""
    for name in case.path_parameters:
        if known.get(name) and coin():
            case.path_parameters[name] = pick(known[name])
    if case.path == "/api/v1/auth/login" and isinstance(case.body, dict) and coin():
        case.body["username"], case.body["password"] = LOGIN[0], pick([LOGIN[1], "wrong"])


COUNTS: dict[tuple[str, int], int] = {}  # (operation, status) -> answers; printed at the end (-s)


@pytest.fixture(scope="module", autouse=True)
def tally():
    yield
    if COUNTS:
        by_op: dict[str, dict[int, int]] = {}
        for (label, status), n in sorted(COUNTS.items()):
            by_op.setdefault(label, {})[status] = n
        print(f"\n{sum(COUNTS.values())} fuzzed requests:")
        for label, statuses in by_op.items():
            print(f"  {label}: " + ", ".join(f"{s} x{n}" for s, n in statuses.items()))


@pytest.mark.filterwarnings(  # the WSGI transport leaves a static file's response unclosed (a server closes it)
    "ignore:unclosed file.*/web/static/:ResourceWarning",
    "ignore:Exception ignored in.*/web/static/:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("label", _operations())
def test_the_fog_api_holds_to_its_document(api_schema, fuzzed, label, mode):
    """schemathesis.pytest's own parametrize (from_fixture) fails on pytest 9 (it reads
    request.node._nodeid), so each operation's strategy is run with hypothesis here."""
    app, token, known = fuzzed
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode), data=st.data())
    def fuzz(case, data):
        seed(case, known, lambda: data.draw(st.booleans()), lambda xs: data.draw(st.sampled_from(xs)))
        app.extensions.pop("aquafog_login_limiter", None)
        resp = case.call(headers={"Authorization": f"Bearer {token}"})
        key = (label, resp.status_code)
        COUNTS[key] = COUNTS.get(key, 0) + 1
        case.validate_response(resp, checks=CHECKS)

    try:
        fuzz()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # nothing in this operation can be invalid: no parameters, or a string path parameter
        # without a pattern (GET /api/v1/openapi.json, GET /api/v1/meters/{meter_id})


@pytest.mark.filterwarnings(
    "ignore:unclosed file.*/web/static/:ResourceWarning",
    "ignore:Exception ignored in.*/web/static/:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("label", _operations())
def test_the_fog_api_holds_to_its_document_at_the_edges(api_schema, fuzzed, label):
    """schemathesis's coverage phase: each parameter's boundary and just-past-boundary
    values, missing required parts, wrong types, unexpected methods."""
    app, token, known = fuzzed
    operation = api_schema.find_operation_by_label(label)
    config = api_schema.config.generation_for(operation=operation)
    failures = []
    rng = random.Random(label)
    for case in api_schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                               generation_config=config):
        seed(case, known, lambda: rng.random() < 0.5, rng.choice)
        app.extensions.pop("aquafog_login_limiter", None)
        resp = case.call(headers={"Authorization": f"Bearer {token}"})
        key = (label + " (edges)", resp.status_code)
        COUNTS[key] = COUNTS.get(key, 0) + 1
        try:
            case.validate_response(resp, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup: collected, reported at once
            failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r}: {exc}")
    assert not failures, "\n".join(failures[:10])
