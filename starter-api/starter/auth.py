"""Who is calling: HTTP basic auth, and signed time-limited tokens (flask-httpauth).

A token is accepted two ways: as the basic-auth username with an empty
password (the seed's contract) and as ``Authorization: Bearer <token>``.
Tokens carry a digest of the password hash, so changing a password revokes them.
"""

from functools import lru_cache

from flask import current_app
from flask_httpauth import HTTPBasicAuth, HTTPTokenAuth, MultiAuth
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from .db import db
from .http.errors import error_response
from .models import User

TOKEN_SALT = "starter-api.auth-token"

basic_auth = HTTPBasicAuth(realm="starter-api")
token_auth = HTTPTokenAuth(scheme="Bearer", realm="starter-api")
auth = MultiAuth(basic_auth, token_auth)


def _serializer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def issue_token(user):
    """Return a signed token for ``user``, valid for ``TOKEN_EXPIRATION`` seconds."""
    return _serializer().dumps({"uid": user.id, "stamp": user.credential_stamp})


def user_from_token(token):
    """Return the user a valid, unexpired token names, else None."""
    try:
        claims = _serializer().loads(token, max_age=current_app.config["TOKEN_EXPIRATION"])
        user = db.session.get(User, int(claims["uid"]))
    except (BadSignature, KeyError, TypeError, ValueError):
        return None
    if user is None or claims.get("stamp") != user.credential_stamp:
        return None
    return user


@lru_cache(maxsize=4)
def _decoy_hash(method):
    return generate_password_hash("decoy password", method=method)


@basic_auth.verify_password
def verify_password(username, password):
    """Return the user the credentials prove, else None."""
    if not username:
        return None
    if not password:
        return user_from_token(username)
    user = User.by_username(username)
    if user is None:
        # Hash anyway, so an unknown name costs what a wrong password does.
        check_password_hash(_decoy_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        return None
    return user if user.verify_password(password) else None


@token_auth.verify_token
def verify_token(token):
    return user_from_token(token) if token else None


def auth_error(status):
    """Auth failures use the API's JSON error body; flask-httpauth adds WWW-Authenticate."""
    message = "valid credentials required" if status == 401 else None
    return error_response(status, message)


basic_auth.error_handler(auth_error)
token_auth.error_handler(auth_error)
