"""Who is calling: HTTP basic auth, and signed time-limited tokens (flask-httpauth).

A token is accepted two ways: as the basic-auth username with an empty
password (the seed's contract) and as ``Authorization: Bearer <token>``.
Tokens carry a digest of the password hash, so changing a password revokes them.

A password hash takes tens of milliseconds by design, so verified basic-auth
credentials are remembered for ``AUTH_CACHE_SECONDS``, keyed by a keyed digest
of username and password (never the password itself). An entry holds only
while the users' data version is the one it was verified at: any change to
any user (a new password, a removal) invalidates them all at once, and the
check costs nothing more than the version read every request makes anyway.
"""

import functools
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from cachetools import TTLCache
from flask import current_app, request
from flask_httpauth import HTTPBasicAuth, HTTPTokenAuth, MultiAuth
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.datastructures import Authorization
from werkzeug.exceptions import Forbidden
from werkzeug.security import check_password_hash, generate_password_hash

from . import limits, observability
from .db import db
from .http.errors import error_response
from .models import DataVersion, User

TOKEN_SALT = "starter-api.auth-token"

basic_auth = HTTPBasicAuth(realm="starter-api")
token_auth = HTTPTokenAuth(scheme="Bearer", realm="starter-api")
auth = MultiAuth(basic_auth, token_auth)


@dataclass(frozen=True)
class Principal:
    """The authenticated user as the request sees it: a snapshot, not a database row."""

    id: int
    username: str
    is_admin: bool
    credential_stamp: str

    @classmethod
    def of(cls, user):
        return cls(user.id, user.username, user.is_admin, user.credential_stamp)


class VerifiedCredentials:
    """Credentials that proved a user recently (bounded size and age), by a keyed digest.

    Basic auth remembers (username, password) after the hash check; tokens
    remember (user id, password stamp) after the user lookup.

    Credentials in use are verified again before they expire: past half their
    time, one request through the app (``lookup(claim=True)``) re-checks them
    while the others keep being answered from the entry. Otherwise every worker
    would stall on the same password hash each time a busy client's entry ran out.
    """

    def __init__(self, maxsize=4096):
        self._maxsize = maxsize
        self._entries = None
        self._ttl = None
        self._key = secrets.token_bytes(32)  # per process: digests are useless elsewhere
        self._lock = threading.Lock()

    def _digest(self, parts):
        message = "\0".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _cache(self):
        if self._entries is None:
            self._ttl = current_app.config["AUTH_CACHE_SECONDS"]
            self._entries = TTLCache(self._maxsize, self._ttl, timer=time.monotonic)
        return self._entries

    def lookup(self, *parts):
        """Return the principal these credentials proved recently, if still valid, else None.

        None also when the entry is due to be verified again and this caller is the
        one to do it.
        """
        if current_app.config["AUTH_CACHE_SECONDS"] <= 0:
            return None
        return self.lookup_at(DataVersion.current().users, *parts, claim=True)

    def lookup_at(self, users_version, *parts, claim=False):
        """``lookup`` for a caller that knows the users' version (and may run outside Flask).

        Without ``claim`` (the read cache), an entry due to be verified again that no
        request is re-checking yet gives None, which sends the request to the app.
        """
        with self._lock:
            if self._entries is None:
                return None
            entry = self._entries.get(self._digest(parts))
            if entry is None or entry.users_version != users_version:
                return None
            if not entry.refreshing and time.monotonic() - entry.verified_at > self._ttl / 2:
                entry.refreshing = claim
                return None
            return entry.principal

    def remember(self, principal, *parts):
        if current_app.config["AUTH_CACHE_SECONDS"] <= 0:
            return
        # The version was read before the credentials were checked, so a change made
        # meanwhile makes this entry stale at once rather than missed.
        entry = _Verified(principal, DataVersion.current().users, time.monotonic())
        with self._lock:
            self._cache()[self._digest(parts)] = entry

    def clear(self):
        with self._lock:
            self._entries = None


@dataclass
class _Verified:
    principal: Principal
    users_version: str
    verified_at: float
    refreshing: bool = False


verified = VerifiedCredentials()


def _serializer(config):
    return URLSafeTimedSerializer(config["SECRET_KEY"], salt=TOKEN_SALT)


def issue_token(user):
    """Return a signed token for ``user``, valid for ``TOKEN_EXPIRATION`` seconds."""
    return _serializer(current_app.config).dumps({"uid": user.id, "stamp": user.credential_stamp})


def _token_key(token, config):
    """Return the cache key a valid, unexpired token stands for, else None."""
    try:
        # Signature and age: checked on every use, without the database.
        claims = _serializer(config).loads(token, max_age=config["TOKEN_EXPIRATION"])
        return ("token", int(claims["uid"]), str(claims["stamp"]))
    except (BadSignature, KeyError, TypeError, ValueError, OverflowError):
        return None


def user_from_token(token):
    """Return the principal a valid, unexpired token names, else None."""
    key = _token_key(token, current_app.config)
    if key is None:
        return None
    principal = verified.lookup(*key)
    if principal is not None:
        return principal
    DataVersion.current()  # read before the lookup: see VerifiedCredentials.remember
    user = db.session.get(User, key[1])
    if user is None or key[2] != user.credential_stamp:
        return None
    principal = Principal.of(user)
    verified.remember(principal, *key)
    return principal


def remembered_principal(authorization, users_version, config):
    """The principal the credentials in ``authorization`` (a header value) proved recently,
    if the users are still at ``users_version``; else None. Needs no app context.

    Parsed as flask-httpauth parses them (werkzeug): basic credentials, a token as
    the basic username with an empty password, or a Bearer token.
    """
    credentials = Authorization.from_header(authorization)
    if credentials is None:
        return None
    if credentials.type == "basic":
        username, password = credentials.username, credentials.password
        if not username:
            return None
        if password:
            return verified.lookup_at(users_version, "basic", username, password)
        token = username
    elif credentials.type == "bearer":
        token = credentials.token
    else:
        return None
    key = _token_key(token, config) if token else None
    return verified.lookup_at(users_version, *key) if key else None


@lru_cache(maxsize=4)
def _decoy_hash(method):
    return generate_password_hash("decoy password", method=method)


@basic_auth.verify_password
def verify_password(username, password):
    """Return the principal the credentials prove, else None."""
    if not username:
        return None
    if not password:
        return user_from_token(username)
    principal = verified.lookup("basic", username, password)
    if principal is not None:
        return principal
    DataVersion.current()  # read before the check: see VerifiedCredentials.remember
    user = User.by_username(username)
    observability.metrics(current_app).password_hashes.inc()
    if user is None:
        # Hash anyway, so an unknown name costs what a wrong password does.
        check_password_hash(_decoy_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        return None
    if not user.verify_password(password):
        return None
    principal = Principal.of(user)
    verified.remember(principal, "basic", username, password)
    return principal


@token_auth.verify_token
def verify_token(token):
    return user_from_token(token) if token else None


def auth_error(status):
    """Auth failures use the API's JSON error body; flask-httpauth adds WWW-Authenticate."""
    if status == 401:
        limits.record_failed_login()
        observability.metrics(current_app).failed_logins.inc()
    message = "valid credentials required" if status == 401 else None
    return error_response(status, message)


basic_auth.error_handler(auth_error)
token_auth.error_handler(auth_error)


def login_required(view):
    """Authenticate the request (basic or Bearer), unless its address failed too often."""

    @functools.wraps(view)
    def noting_the_user(*args, **kwargs):
        request.environ[observability.USER] = auth.current_user().username  # for the access line
        return view(*args, **kwargs)

    authenticated = auth.login_required(noting_the_user)

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        limits.refuse_after_failed_logins()
        return authenticated(*args, **kwargs)

    return wrapped


def admin_required(view):
    """Let only admin users through (403 for the others); runs after authentication."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not auth.current_user().is_admin:
            raise Forbidden("this request needs an admin user")
        return view(*args, **kwargs)

    return wrapped
