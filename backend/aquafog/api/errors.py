"""JSON errors for every failure: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ..gateway.commands import CommandError

log = logging.getLogger("aquafog.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "bad_request", message, field)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def _body(code: str, message: str, field: str | None):
    return jsonify({"error": {"code": code, "message": message, "field": field}})


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        resp = _body(e.code, e.message, e.field)
        resp.status_code = e.status
        if e.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="aquafog"'
        if getattr(e, "retry_after", None):
            resp.headers["Retry-After"] = str(e.retry_after)
        return resp

    @app.errorhandler(CommandError)
    def _command_error(e: CommandError):
        return _body(e.code, e.message, e.field), e.status

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        code = (e.name or "error").lower().replace(" ", "_")
        messages = {
            404: "no such endpoint; the API lives under /api/v1 (see docs/http-api.md)",
            405: f"method not allowed here; allowed: {', '.join(e.valid_methods or [])}"
            if getattr(e, "valid_methods", None) else "method not allowed here",
        }
        return _body(code, messages.get(e.code, e.description or code), None), e.code

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error in the API")
        return _body("internal_error", "the gateway failed to answer; the error is in its log", None), 500
