"""JSON error bodies: one builder, and the handlers that route every error through it."""

from flask import current_app, jsonify
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable
from werkzeug.http import HTTP_STATUS_CODES

from .. import dbhealth
from ..db import discard_session
from ..models import ValidationError
from ..observability import metrics

RETRY_AFTER_SECONDS = 1


def error_response(status, message=None, headers=None):
    """Return ``{"status", "error", "message"}`` as a JSON response with ``status``."""
    error = HTTP_STATUS_CODES.get(status, "Unknown Error")
    response = jsonify(status=status, error=error, message=message or error)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def handle_http_exception(exc):
    """Render any werkzeug HTTP error as JSON, keeping its headers (Allow, WWW-Authenticate)."""
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return error_response(exc.code, exc.description, headers)


def handle_database_unavailable(exc):
    """The database cannot be reached: 503 with Retry-After, not a 500.

    Not a log line per request (an outage would flood the log): the database's
    health logs the outage once, with the count of requests refused meanwhile.
    """
    discard_session()
    reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    metrics(current_app).database_errors.inc()
    health = dbhealth.of(current_app)
    if health is not None:
        health.note_refused(reason)
    else:
        current_app.logger.warning("database unavailable: %s", reason)
    return error_response(
        ServiceUnavailable.code,
        "the database is unavailable, retry shortly",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def handle_unexpected(exc):
    """Log the traceback server-side; the client gets a plain JSON 500."""
    discard_session()
    current_app.logger.exception("unhandled error")
    return error_response(InternalServerError.code, InternalServerError.description)


def handle_invalid_input(exc):
    """Input that does not describe a valid record (``models.ValidationError``): 400 saying why."""
    return error_response(400, str(exc))


def init_app(app):
    """Send every error through ``error_response``."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ValidationError, handle_invalid_input)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
