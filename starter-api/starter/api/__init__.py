"""The ``/api/v1.0`` blueprint: every route behind authentication and a per-user rate limit,
but the OpenAPI document (the contract is no secret; the data is)."""

from flask import Blueprint, request

from ..auth import login_required

bp = Blueprint("api", __name__, url_prefix="/api/v1.0")
PUBLIC_ENDPOINTS = frozenset({"api.openapi_document"})


@bp.before_request
def require_login():
    """Authenticate every request to this blueprint, once, before its view."""
    if request.endpoint not in PUBLIC_ENDPOINTS:
        return _authenticate()
    return None


@login_required
def _authenticate():
    """Nothing to do once authenticated: ``login_required`` answers 401/429 otherwise."""


from . import docs, pxcodes  # noqa: E402,F401  (register the routes on bp)
