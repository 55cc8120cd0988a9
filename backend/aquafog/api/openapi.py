"""The OpenAPI 3.1 document of an app's API, served at GET /api/v1/openapi.json and built
from the code when first asked for:

- paths and methods: the app's URL rules under /api/v1 (every one, so a route cannot be
  left out silently: tests/backend/test_openapi.py fails naming the undocumented route);
- each operation: the YAML after `---` in the view's docstring (apispec's format, read by
  a FlaskPlugin subclass), where `!const NAME` stands for a constant of the view's module
  (`maximum: !const MAX_PAGE`, `enum: !const PERIODS`), so limits and enums are the ones
  the code checks; summary and description from the docstring's text before `---`;
- components (schemas.py; the cloud's in cloud/schemas.py): built from the same constants;
- security: from the access table (api/access.py) in `access_of`.

backend/README.md "Documenting a route" shows the format.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from apispec import APISpec
from apispec_webframeworks.flask import FlaskPlugin
from flask import Blueprint, Flask, current_app, jsonify
from werkzeug.routing import Rule

from .. import __version__
from .schemas import PARAMETERS, RESPONSES, SHARED

OPENAPI_VERSION = "3.1.0"
PREFIX = "/api/v1"
METHODS = ("get", "put", "post", "patch", "delete")  # HEAD and OPTIONS are Flask's own
GUIDE = "backend/README.md 'Documenting a route'"

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json():
    """This API as an OpenAPI 3.1 document, generated from the code.
    ---
    get:
      tags: [openapi]
      responses:
        200:
          description: the document (https://spec.openapis.org/oas/v3.1.0)
          content: {application/json: {schema: {type: object}}}
    """
    doc = current_app.extensions.get("aquafog_openapi_doc")
    if doc is None:
        doc = current_app.extensions["aquafog_openapi_doc"] = build(current_app)
    return jsonify(doc)


@dataclass
class DocInfo:
    title: str
    description: str
    schemas: dict[str, dict] = field(default_factory=dict)


def register(app: Flask, title: str, description: str, schemas: dict[str, dict]) -> None:
    """Serve the document of `app` at /api/v1/openapi.json; `schemas`: the app's own body
    schemas besides the shared ones."""
    app.extensions["aquafog_openapi"] = DocInfo(title, description, schemas)
    app.register_blueprint(bp, url_prefix=PREFIX)


# --- security: the hook into the access table --------------------------------------------------
SECURITY = [{"session": []}, {"bearer": []}]


def access_of(endpoint: str) -> dict[str, Any]:
    """The keys an operation gets from the access table (api/access.py): `security` (none for a
    public endpoint, else the session cookie or a bearer token), `x-access` (the level) and
    `x-roles` (the roles that may call it). {} while there is no table."""
    try:
        from . import access
        from ..accounts import ROLES, User
    except ImportError:
        return {}
    level = access.ACCESS.get(endpoint)
    if level is None:
        return {"x-access": "none", "x-roles": [],
                "description": "No rule in the access table (api/access.py): every request is refused (403)."}
    if level == access.PUBLIC:
        return {"security": [], "x-access": level}
    if level in (access.OPERATOR, access.ADMIN):
        roles = [r for r in ROLES if User(0, "", r, 0, frozenset()).at_least(level)]
    else:  # user, own_meter
        roles = list(ROLES)
    out = {"security": SECURITY, "x-access": level, "x-roles": roles}
    if level == access.OWN_METER:
        out["description"] = "A consumer: only their own meters (403 for another's)."
    return out


def _security_schemes(app: Flask) -> dict[str, dict]:
    return {
        "session": {"type": "apiKey", "in": "cookie", "name": app.config["SESSION_COOKIE_NAME"],
                    "description": "the browser's session, from POST /api/v1/auth/login; a request that changes "
                                   "something must also send the session's CSRF token in X-CSRF-Token"},
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "an API token for scripts: Authorization: Bearer aft_... (`aquafog token add`)"},
    }


# --- docstrings -------------------------------------------------------------------------------
class DocstringError(ValueError):
    pass


_MISSING = object()


def _constant(names: dict, dotted: str, where: str) -> Any:
    """`!const NAME`: a name of the view's module (`queries.METER_STATUSES` through one it
    imported), or a module's by its full name (`aquafog.api.meters.MAX_PAGE`)."""
    parts = dotted.split(".")
    value: Any = names.get(parts[0], _MISSING)
    rest = parts[1:]
    if value is _MISSING:
        for i in range(len(parts) - 1, 0, -1):
            try:
                value, rest = importlib.import_module(".".join(parts[:i])), parts[i:]
                break
            except ImportError:
                continue
    try:
        for part in rest:
            value = getattr(value, part)
    except AttributeError:
        value = _MISSING
    if value is _MISSING:
        raise DocstringError(f"{where}: !const {dotted}: no such name in the view's module, nor a module's "
                             "constant by its full name") from None
    if isinstance(value, dict):  # a mapping's keys are what a client sends (city.PERIODS)
        return list(value)
    if isinstance(value, (tuple, list, set, frozenset)):
        return list(value)
    if isinstance(value, re.Pattern):
        return f"^(?:{value.pattern})$"
    if isinstance(value, (str, int, float, bool)):
        return value
    raise DocstringError(f"{where}: !const {dotted} is a {type(value).__name__}, not a number, text or sequence")


def _split_docstring(view, where: str) -> tuple[str, str, dict]:
    """(summary, description, YAML after ---) of a view's docstring."""
    lines = inspect.cleandoc(view.__doc__ or "").split("\n")
    cut = next((i for i, line in enumerate(lines) if line.strip().startswith("---")), len(lines))
    text = "\n".join(lines[:cut]).strip()
    summary, _, description = text.partition("\n")

    class Loader(yaml.SafeLoader):
        pass

    names = getattr(view, "__globals__", {})
    Loader.add_constructor("!const", lambda loader, node: _constant(names, loader.construct_scalar(node), where))
    try:
        data = yaml.load("\n".join(lines[cut:]), Loader) if cut < len(lines) else {}
    except yaml.YAMLError as e:
        raise DocstringError(f"{where}: the YAML after --- does not parse: {e}") from None
    if not isinstance(data, dict):
        raise DocstringError(f"{where}: the YAML after --- must map methods (get:, post: ...) to operations")
    return summary.strip(), description.strip(), data


def _where(app: Flask, rule: Rule) -> str:
    view = app.view_functions[rule.endpoint]
    code = getattr(view, "__code__", None)
    at = f" ({code.co_filename.split('/backend/')[-1]}:{code.co_firstlineno})" if code else ""
    return f"{rule.rule} (endpoint {rule.endpoint}{at})"


class AquaFogFlaskPlugin(FlaskPlugin):
    """FlaskPlugin, driven by URL rule (an endpoint may have several), with the additions
    above: !const, summary and description from the docstring, operationId = endpoint,
    tag = the path's first segment, responses by name, security from the access table."""

    def __init__(self, schemas: dict[str, dict]):
        super().__init__()
        self.schemas = schemas

    def path_helper(self, path=None, operations=None, parameters=None, *, view=None, app=None, rule=None,
                    operation_id=None, **kwargs):
        where = _where(app, rule)
        summary, description, doc = _split_docstring(view, where)
        tag = rule.rule[len(PREFIX):].strip("/").split("/")[0]
        for method in METHODS:
            given = doc.get(method)
            if given is None or method.upper() not in (rule.methods or ()):
                continue
            given = copy.deepcopy(given)
            op = {"summary": given.pop("summary", summary), "description": given.pop("description", description),
                  "operationId": given.pop("operationId", operation_id or rule.endpoint),
                  "tags": given.pop("tags", [tag]), **given}
            op["responses"] = {str(k): self._response(v, op["summary"], where)
                               for k, v in (op.get("responses") or {}).items()}
            access = access_of(rule.endpoint)
            if "description" in access:
                extra = access.pop("description")
                op["description"] = f"{op['description']}\n\n{extra}" if op["description"] else extra
            op.update(access)
            if access.get("security"):
                op["responses"].setdefault("401", "Unauthorized")
                op["responses"].setdefault("403", "Forbidden")
            operations[method] = {k: v for k, v in op.items() if v or k == "security"}
        return self.flaskpath2openapi(rule.rule)

    def _response(self, r, summary: str, where: str):
        """A shared response by name (BadRequest, NotFound ...), a body schema by name (a JSON
        answer of that schema), or a full response object."""
        if isinstance(r, str) and r not in RESPONSES:
            if r not in self.schemas:
                raise DocstringError(f"{where}: response {r!r} is neither a shared response "
                                     f"({', '.join(RESPONSES)}) nor a schema in api/schemas.py")
            return {"description": self.schemas[r].get("description", summary or r),
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{r}"}}}}
        return r


STATIC_FILES = ("static", "web.static")  # files, not operations


def api_rules(app: Flask) -> list[Rule]:
    """Every URL rule of the app but its static files, by path: the API under /api/v1 and
    the web UI's pages."""
    return sorted((r for r in app.url_map.iter_rules() if r.endpoint not in STATIC_FILES),
                  key=lambda r: (r.rule, r.endpoint))


def documented_methods(app: Flask, rule: Rule) -> list[str]:
    """The methods of `rule` its view's docstring documents (for the test's messages)."""
    _, _, doc = _split_docstring(app.view_functions[rule.endpoint], _where(app, rule))
    return [m.upper() for m in doc if m in METHODS]


def build(app: Flask) -> dict:
    info: DocInfo = app.extensions["aquafog_openapi"]
    schemas = {**SHARED, **info.schemas}
    plugin = AquaFogFlaskPlugin(schemas)
    spec = APISpec(title=info.title, version=__version__, openapi_version=OPENAPI_VERSION, plugins=[plugin],
                   info={"description": info.description,
                         "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}})
    for name, s in schemas.items():
        spec.components.schema(name, s)
    for name, p in PARAMETERS.items():
        spec.components.parameter(name, p["in"], {k: v for k, v in p.items() if k != "in"})
    for name, r in RESPONSES.items():
        spec.components.response(name, r)
    for name, s in _security_schemes(app).items():
        spec.components.security_scheme(name, s)
    rules = api_rules(app)
    per_endpoint: dict[str, int] = {}
    for rule in rules:
        per_endpoint[rule.endpoint] = per_endpoint.get(rule.endpoint, 0) + 1
    seen: dict[str, int] = {}
    for rule in rules:
        n = seen[rule.endpoint] = seen.get(rule.endpoint, 0) + 1
        spec.path(view=app.view_functions[rule.endpoint], app=app, rule=rule,
                  operation_id=rule.endpoint if per_endpoint[rule.endpoint] == 1 else f"{rule.endpoint}.{n}")
    doc = spec.to_dict()
    doc["paths"] = {p: ops for p, ops in doc["paths"].items() if ops}  # undocumented: the test names them
    return doc
