"""The API's JSON shapes as OpenAPI 3.1 components (openapi.py puts them in the document).

Built from the constants the code checks against, so an enum or a limit cannot drift from
the check. Declared once here: the error body, the valve command and the policy settings
(both the fog's API and the cloud's take them), the shared path parameters and error
responses. Every body schema below is also a response of the same name, so a route's
docstring says `200: MeterPage`. Bodies list every key the serializer writes as required;
tests/backend/test_openapi.py checks real answers against them with no extra keys allowed.
"""

from __future__ import annotations

from ..accounts import ROLES, TOKEN_RE
from ..federation import POLICY_SOURCES
from ..policy import MAX_FACTOR, MAX_LISTED, MAX_M3, MODES, RULES, PolicySettings
from ..policy import PERIODS as POLICY_PERIODS
from ..protocol import (ALARMS, CLOCK_STATES, COMMAND_ID_RE, LOCAL_PREFIX, METER_ID_RE, RESET_CAUSES,
                        VALVE_STATES)
from ..gateway.alerts import KINDS as ALERT_KINDS
from . import city, consumption, ranking
from .params import MAX_REASON

COMMAND_STATUSES = ("queued", "sent", "applied", "failed", "expired")  # the fog's ledger
COMMAND_ORIGINS = ("api", "cloud", "reconcile", "meter", "policy")
POLICY_ACTIONS = ("would_block", "blocked", "released", "valve_closed", "exempt")


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def anchored(pattern: str) -> str:
    """A fullmatch regex as an OpenAPI pattern (which is searched, not matched)."""
    return f"^(?:{pattern})$"


S, I, N, B = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
MONEY = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}  # an exact decimal, as a string


def null(schema: dict) -> dict:
    """The schema, or null."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def enum(values, nullable: bool = False) -> dict:
    if nullable:
        return {"type": ["string", "null"], "enum": [*values, None]}
    return {"type": "string", "enum": list(values)}


def arr(items: dict, **kw) -> dict:
    return {"type": "array", "items": items, **kw}


def obj(description: str | None = None, **props) -> dict:
    """An object whose keys are all always present."""
    s = {"type": "object", "properties": props, "required": list(props)}
    return {"description": description, **s} if description else s


METER_ID = {"type": "string", "pattern": anchored(METER_ID_RE.pattern), "maxLength": 32}
COMMAND_ID = {"type": "string", "pattern": anchored(COMMAND_ID_RE.pattern)}
PERIOD_KEY = obj(kind=S, key={"type": "string", "description": "2026-11-24 for a day, 2026-11 for a month"})

# --- shared by the fog's and the cloud's API --------------------------------------------------
_d = PolicySettings()
SHARED = {
    "Error": obj(
        "Every error: a stable code, a sentence saying what to do, and the parameter or body field at fault.",
        error=obj(code={"type": "string", "examples": ["bad_request", "not_found", "conflict"]},
                  message=S, field=null(S))),
    "ValveRequest": {
        "type": "object", "required": ["state"], "additionalProperties": False,
        "properties": {
            "state": enum(VALVE_STATES),
            "reason": {"type": ["string", "null"], "maxLength": MAX_REASON},
            "command_id": {"type": ["string", "null"],
                           "pattern": f"^(?!{LOCAL_PREFIX})(?:{COMMAND_ID_RE.pattern})$",
                           "description": f"your id for the command (idempotency: the same id and body answer "
                                          f"the same command, 200); must not start with {LOCAL_PREFIX!r}, "
                                          "which meters use for their own changes"},
        },
    },
    "PolicySettings": {
        "type": "object", "additionalProperties": False,
        "description": "Consumption policy settings (docs/operate.md 'Policies'); a missing key takes its default.",
        "properties": {
            "mode": {**enum(MODES), "default": _d.mode},
            "period": {**enum(POLICY_PERIODS), "default": _d.period},
            "mean_rule": {**B, "default": _d.mean_rule},
            "mean_factor": {**N, "exclusiveMinimum": 0, "maximum": MAX_FACTOR, "default": _d.mean_factor},
            "cap_m3": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_M3, "default": _d.cap_m3},
            "caps_m3": {"type": "object", "maxProperties": MAX_LISTED,
                        "propertyNames": METER_ID,
                        "additionalProperties": {**N, "exclusiveMinimum": 0, "maximum": MAX_M3},
                        "description": "per-meter caps, replacing cap_m3 for that meter", "default": {}},
            "exempt": {**arr(METER_ID, maxItems=MAX_LISTED), "default": []},
        },
    },
    "LoginRequest": {
        "type": "object", "required": ["username", "password"], "additionalProperties": False,
        "properties": {"username": S, "password": S},
    },
    "Me": obj(user=obj(username=S, role=enum(ROLES), meters=arr(METER_ID),
                       csrf_token={"type": ["string", "null"],
                                   "description": "send it as X-CSRF-Token with changes made with the cookie"})),
    "Ok": obj(ok=B),
    "TokenRequest": {"type": "object", "required": ["name"], "additionalProperties": False,
                     "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64}}},
    "NewToken": obj(id=S, token={"type": "string", "pattern": anchored(TOKEN_RE.pattern)}, note=S),
    "Token": obj(id=S, name=S, username=S, created_ms=I, last_used_ms=null(I), revoked_ms=null(I)),
    "TokenPage": obj(items=arr(ref("Token"))),
    "Revoked": obj(revoked=S),
}

# --- the fog's API ------------------------------------------------------------------------------
_VALVE = {"desired": enum(VALVE_STATES, True), "reported": enum(VALVE_STATES, True)}
_SUMMARY = {"meter": S, "label": null(S), "online": null(B), "last_seen_at": null(TIME),
            "litres": null(N), "flow_lpm": null(N), "valve": obj(**_VALVE)}

FOG = {
    "MeterSummary": obj(**_SUMMARY),
    "MeterPage": obj(items=arr(ref("MeterSummary")),
                     next={"type": ["string", "null"], "description": "the cursor of the next page; null at the end"}),
    "MeterHealth": obj(
        "The meter's latest tele/health report as it sent it, and when the gateway received it.",
        boot=S, fw=S, uptime_s=I, reset=enum(RESET_CAUSES), rssi=null(I), heap_free=I, dropped=I, buffer=I,
        clock=enum(CLOCK_STATES), alarms=arr(enum(ALARMS)), received=TIME),
    "MeterDetail": obj(**{
        **_SUMMARY,
        "valve": obj(**_VALVE, pending_command=null(S)),
        "status_changed_at": null(TIME), "fw": null(S),
        "register": obj(litres=null(N), pulses=null(I), boot=null(S), seq=null(I), at=null(TIME)),
        "consumption": obj(today_litres=N, month_litres=N, total_litres=N),
        "readings": I, "registered_at": null(TIME), "health": null(ref("MeterHealth"))}),
    "Reading": obj(boot=S, seq=I, ts=TIME, pulses=I, litres=N, flow_lpm=N, valve=enum(VALVE_STATES, True),
                   received_at=TIME),
    "ReadingPage": obj(meter=S, **{"from": TIME, "to": TIME}, items=arr(ref("Reading")), next=null(S)),
    "Ranking": obj(period=obj(kind=enum(ranking.PERIODS), **{"from": S, "to": S}, timezone=S),
                   n=I, items=arr(obj(rank=I, meter=S, litres=N))),
    "Command": obj(
        "A valve command in the fog's ledger: applied only when the meter confirms.",
        id=S, meter=S, kind=S, state=enum(VALVE_STATES), reason=null(S), origin=enum(COMMAND_ORIGINS),
        status=enum(COMMAND_STATUSES), error=null(S), attempts=I, created_at=TIME, sent_at=null(TIME),
        done_at=null(TIME), expires_at=null(TIME)),
    "CommandBody": obj(command=ref("Command")),
    "CommandPage": obj(items=arr(ref("Command"))),
    "Health": {**obj(status=enum(("ok", "degraded")), problems=arr(S)),
               "description": "More keys (version, uptime, MQTT links, ingest counters) follow; 503 when degraded.",
               "additionalProperties": True},
    "IngestStats": {**obj(**{k: I for k in ("accepted", "duplicate", "late", "register_reset", "rejected_total")},
                          rejected={"type": "object", "additionalProperties": obj(
                              count=I, fields={"type": "object", "additionalProperties": I})},
                          recent_rejects=arr(obj(received_at=TIME, topic=S, reason=S, field=null(S),
                                                 message=S, payload=null(S))))},
    "FogCityMean": obj(
        "The newest city mean the cloud sent this fog.",
        period=obj(kind=enum(city.PERIODS), key=S), meters=I, sum_ml=I, mean_litres=null(N), regions=arr(S),
        as_of_ms=I),
    "PolicyRule": obj(rule=enum(RULES), threshold_ml=I),
    "PolicyState": {
        "type": "object", "required": ["settings", "source", "updated_ms", "interval_ms"],
        "properties": {
            "settings": ref("PolicySettings"), "source": enum(POLICY_SOURCES), "updated_ms": I, "interval_ms": I,
            "evaluation": null(ref("PolicyEvaluation")),
        },
    },
    "PolicyEvaluation": obj(
        "The latest evaluation: the meters over a rule, ml descending, and what happened to them.",
        evaluated_ms=I, mode=enum(MODES), period=PERIOD_KEY,
        mean=null(obj(source=S, sum_ml=I, meters=I, mean_litres=null(N), as_of_ms=I)),
        thresholds=obj(mean_ml=null(I), cap_ml=null(I), own_caps=I), problems=arr(S),
        counts={"type": "object", "required": ["over"], "additionalProperties": I},
        meters=arr(obj(meter=S, ml=I, litres=N, rules=arr(ref("PolicyRule")), action=enum(POLICY_ACTIONS))),
        meters_total=I),
    "PolicyBlock": obj(
        meter=S, period=PERIOD_KEY, rule=enum(RULES), rules=arr(ref("PolicyRule")), ml=I, litres=N,
        threshold_ml=I, mean=null(obj(source=S, sum_ml=I, meters=I, factor=N)), command_id=null(S),
        created_ms=I, active=B, released_ms=null(I), released_by=null(S), release_command_id=null(S)),
    "PolicyBlockPage": obj(items=arr(ref("PolicyBlock")), next=null(S)),
    "Alert": obj(
        "An alert raised by the gateway (docs/operate.md 'Alerts'): active while cleared_ms is null, open while acked_ms is.",
        id=I, kind=enum(ALERT_KINDS), meter=METER_ID,
        message={"type": "string", "description": "what happened and what to do"},
        raised_ms=I, cleared_ms=null(I), acked_ms=null(I),
        acked_by={"type": ["string", "null"], "description": "the username of who acknowledged it"},
        details={"type": "object", "additionalProperties": True,
                 "description": "the figures, by kind (docs/operate.md 'Alerts'); `cleared` holds those at the clear"}),
    "AlertPage": obj(items=arr(ref("Alert")), next=null(S)),
    "Usage": obj(
        "A meter's consumption per period, every period from..to listed (0 when nothing was used).",
        meter=S, by=enum(consumption.BY), **{"from": S, "to": S}, timezone=S, total_litres=N,
        items=arr(obj(period={"type": "string", "description": "2026-11-24T09:00+01:00 (hour: local start), "
                                                               "2026-11-24 (day), 2026-11 (month)"},
                      litres=N))),
    "Bill": obj(
        "A month's bill (docs/operate.md 'Tariffs and bills'); amounts are decimal strings, exact, in the currency's minor unit.",
        meter=S, month=S, **{"from": S, "to": S}, timezone=S,
        complete={**B, "description": "false for this month: the bill so far"},
        consumption=obj(litres=N, m3={**MONEY, "description": "exact cubic metres (6 decimals)"}),
        tariff=obj(utility=S, effective=S, name=null(S)), currency=S,
        lines=arr(obj(block={"type": "string", "examples": ["0-10", "10-20", "50+"]}, from_m3=I, to_m3=null(I),
                      minimum={**B, "description": "the minimum charge's line (no unit price)"}, m3=MONEY,
                      unit_price=null(MONEY), amount=MONEY)),
        water=MONEY, sewage_percent=MONEY, sewage=MONEY, total=MONEY),
}

PARAMETERS = {
    "meter_id": {"name": "meter_id", "in": "path", "required": True, "schema": METER_ID,
                 "description": "a meter id: 1-32 of a-z 0-9 _ -, starting with a letter or digit"},
    "command_id": {"name": "command_id", "in": "path", "required": True, "schema": COMMAND_ID,
                   "description": "a command id from the answer to a valve command"},
}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


RESPONSES = {
    "Page": {"description": "a page of the web UI (docs/operate.md 'The dashboard'): HTML whose script reads the API",
             "content": {"text/html": {"schema": {"type": "string"}}}},
    "ToLogin": {"description": "no session: to /login?next=<this page>; a consumer asking for an operator's page: "
                               "to /portal", "headers": {"Location": {"schema": {"type": "string"}}}},
    "BadRequest": _error("a parameter or the body is wrong: `field` names it"),
    "Unauthorized": _error("not logged in: log in, or send Authorization: Bearer <token>"),
    "Forbidden": _error("logged in, but the role (or, for a consumer, the meter) does not allow it"),
    "NotFound": _error("no such meter, command or figure: the message says which"),
    "Conflict": _error("command_id was already used for another request"),
    "TooManyRequests": {**_error("too many attempts: wait Retry-After seconds"),
                        "headers": {"Retry-After": {"description": "seconds to wait", "schema": I}}},
    "BadGateway": _error("the owning fog answered with something that is not its API, or not at all"),
    "ServiceUnavailable": _error("not available now, the message says why (at the cloud: the owning fog has not "
                                 "announced its API URL yet)"),
    "GatewayTimeout": _error("the owning fog did not answer in time"),
    # not an error: a stream of server-sent events; the route's description names its events
    "EventStream": {"description": "server-sent events (text/event-stream) until the client disconnects",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
}
