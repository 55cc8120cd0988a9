"""The command ledger, read side."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..protocol import COMMAND_ID_RE
from ..store import queries
from . import db, serialize
from .errors import not_found

bp = Blueprint("commands", __name__)


@bp.get("/commands/<command_id>")
def get_command(command_id: str):
    """A valve command: its status (queued, sent, applied, failed, expired), times and error.
    ---
    get:
      parameters: [command_id]
      responses:
        200: CommandBody
        404: NotFound
    """
    c = queries.get_command(db(), command_id) if COMMAND_ID_RE.fullmatch(command_id) else None
    if c is None:
        raise not_found(f"no command {command_id[:64]!r} at this gateway")
    return jsonify({"command": serialize.command(c)})
