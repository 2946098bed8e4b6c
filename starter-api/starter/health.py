"""Probes for orchestrators: ``/healthz`` (process alive) and ``/readyz`` (database reachable)."""

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .db import db, discard_session
from .http.errors import error_response
from .limits import limiter

bp = Blueprint("health", __name__)
# Orchestrators probe often, from one address: never rate-limit them.
limiter.exempt(bp)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        discard_session()
        current_app.logger.warning("readiness check failed: %s", type(exc).__name__)
        return error_response(503, "the database is unreachable", {"Retry-After": "1"})
    return jsonify(status="ready")
