"""The ``/api/v1.0`` blueprint: every route behind authentication."""

from flask import Blueprint

from ..auth import auth

bp = Blueprint("api", __name__, url_prefix="/api/v1.0")


@bp.before_request
@auth.login_required
def require_login():
    """Authenticate every request to this blueprint, once, before its view."""


from . import pxcodes  # noqa: E402,F401  (registers the routes on bp)
