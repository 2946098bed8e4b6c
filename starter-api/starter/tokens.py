"""``/auth/request-token``: trade a password for a short-lived signed token."""

from flask import Blueprint, current_app, jsonify

from .auth import current_principal, issue_token, login_required, password_required
from .limits import per_user

bp = Blueprint("tokens", __name__, url_prefix="/auth")


@bp.get("/request-token")
@login_required
@password_required  # a stolen token must not renew itself until the password changes
@per_user
def request_token():
    user = current_principal()
    response = jsonify(
        token=issue_token(user),
        expiration=current_app.config["TOKEN_EXPIRATION"],
        is_admin=user.is_admin,  # the code browser shows admins the write controls
    )
    # A credential: no cache may keep it.
    response.headers["Cache-Control"] = "no-cache, no-store, max-age=0"
    return response
