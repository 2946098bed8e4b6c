"""The ``/api/v1.0`` blueprint: every route behind authentication and a per-user rate limit."""

from flask import Blueprint

from ..auth import login_required

bp = Blueprint("api", __name__, url_prefix="/api/v1.0")


@bp.before_request
@login_required
def require_login():
    """Authenticate every request to this blueprint, once, before its view."""


from . import docs, pxcodes  # noqa: E402,F401  (register the routes on bp)
