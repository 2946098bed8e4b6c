"""Probes for orchestrators: ``/healthz`` (process alive) and ``/readyz`` (database reachable, not shutting down)."""

from flask import Blueprint, jsonify, request

from .db import database_answers
from .draining import DRAINING
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
    if request.environ.get(DRAINING):
        return error_response(503, "the server is shutting down", {"Retry-After": "1"})
    if not database_answers():
        return error_response(503, "the database is unreachable", {"Retry-After": "1"})
    return jsonify(status="ready")
