"""Who is calling: HTTP basic auth and signed time-limited tokens, through flask-httpauth.

``authenticate`` is the one call that turns an ``Authorization`` header value into a
verified principal, or None: flask-httpauth's login flow uses it, and so does the read
cache (with the users' data version it knows, and then only for credentials verified
recently, without a hash, a query or an app context). The header is parsed once, by
``credentials.parse``, so both paths mean the same by it.

A token is accepted two ways: as the basic-auth username with an empty password (the
seed's contract) and as ``Authorization: Bearer <token>``. Tokens carry a digest of the
password hash, so changing a password revokes them. A new token needs the password.

A password hash takes tens of milliseconds of CPU by design. Verified credentials are
remembered for ``AUTH_CACHE_SECONDS``, keyed by a keyed digest (never the password); an
entry holds only while the users' data version is the one it was verified at, so any
change to any user invalidates them all at once. Credentials not remembered are guesses
as far as the rate limits go (``limits.refuse_failed_logins``), and at most
``AUTH_PASSWORD_CHECKS`` hashes run at once per worker: beyond that the answer is 503,
so unverified credentials cannot take the CPU the verified ones are served with.
"""

import collections
import functools
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from cachetools import TTLCache
from flask import current_app, request
from flask_httpauth import HTTPAuth
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.exceptions import Forbidden, ServiceUnavailable
from werkzeug.security import check_password_hash, generate_password_hash

from . import credentials, limits, observability, principal
from .db import db
from .http import turns
from .http.errors import error_response
from .models import DataVersion, User
from .principal import PASSWORD, TOKEN, Principal

TOKEN_SALT = "starter-api.auth-token"
REALM = "starter-api"
EXTENSION = "starter_auth"
HASH_RETRY_AFTER_SECONDS = 1
# How long a request waits for the check of the same credentials that another request is making.
SAME_CHECK_WAIT_SECONDS = 5.0
# The nice value of the thread that re-checks remembered credentials (``Refresher``).
REFRESH_NICE = 10

log = logging.getLogger(__name__)


class VerifiedCredentials:
    """Credentials that proved a user recently (bounded size and age), by a keyed digest.

    Basic auth remembers (username, password) after the hash check; tokens
    remember (user id, password stamp) after the user lookup.

    Credentials in use are verified again before they expire: past half their
    time, one request through the app claims the re-check (``lookup_or_claim``) and
    hands it to a background thread (``Refresher``), while it and the others keep
    being answered from the entry. Otherwise every worker would stall on the same
    password hash each time a busy client's entry ran out; and a hash on the request
    path stalled that client's requests while it took a core (bench/README.md).
    """

    def __init__(self, seconds, maxsize=4096):
        self._ttl = seconds
        self._entries = TTLCache(maxsize, seconds, timer=time.monotonic) if seconds > 0 else None
        self._key = secrets.token_bytes(32)  # per process: digests are useless elsewhere
        self._lock = threading.Lock()

    def digest(self, parts):
        message = "\0".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def lookup(self, users_version, parts):
        """The principal these credentials proved recently, if still valid, else None; None too
        for an entry due to be verified again and not claimed yet (the read cache: that request
        goes to the app, which claims the re-check)."""
        principal, due = self._find(users_version, parts, claim=False)
        return None if due else principal

    def lookup_or_claim(self, users_version, parts):
        """``(principal, claimed)``: the principal these credentials proved recently (None if
        none), and whether this caller claimed their re-check (the entry is past half its time
        and nobody is re-checking it: one caller each time)."""
        return self._find(users_version, parts, claim=True)

    def _find(self, users_version, parts, claim):
        if self._entries is None:
            return None, False
        with self._lock:
            entry = self._entries.get(self.digest(parts))
            if entry is None or entry.users_version != users_version:
                return None, False
            due = not entry.refreshing and time.monotonic() - entry.verified_at > self._ttl / 2
            if due and claim:
                entry.refreshing = True
            return entry.principal, due

    def release(self, parts):
        """A claimed re-check did not happen: the next request may claim it again."""
        with self._lock:
            entry = self._entries.get(self.digest(parts)) if self._entries is not None else None
            if entry is not None:
                entry.refreshing = False

    def forget(self, parts):
        if self._entries is not None:
            with self._lock:
                self._entries.pop(self.digest(parts), None)

    def remember(self, principal, users_version, parts):
        if self._entries is None:
            return
        entry = _Verified(principal, users_version, time.monotonic())
        with self._lock:
            self._entries[self.digest(parts)] = entry


class _Check:
    """A password check in progress: the requests with the same credentials wait for its outcome."""

    def __init__(self):
        self.done = threading.Event()
        self.principal = None
        self.refusal = None  # the 503 the check met, for the waiting requests too


class Refresher:
    """Re-checks of remembered credentials, off the request path: one thread at a time, which
    runs at a lower CPU priority (``REFRESH_NICE``) so that a password hash takes the CPU the
    requests leave, not theirs. At most ``PENDING_MAX`` wait; a re-check not taken is left to a
    later request's claim. The thread ends when none is left."""

    PENDING_MAX = 64

    def __init__(self, refresh):
        self._refresh = refresh  # called with each submitted re-check's arguments
        self._pending = collections.deque()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, *args):
        """Queue ``refresh(*args)``; False if too many are waiting."""
        with self._lock:
            if len(self._pending) >= self.PENDING_MAX:
                return False
            self._pending.append(args)
            if self._running:
                return True
            self._running = True
        threading.Thread(target=self._run, name="credentials-refresh", daemon=True).start()
        return True

    def _run(self):
        try:
            # Linux gives each thread its own nice value; elsewhere the re-check runs as it is.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REFRESH_NICE)
        except (AttributeError, OSError):
            pass
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    return
                args = self._pending.popleft()
            self._refresh(*args)


@dataclass
class _Verified:
    principal: Principal
    users_version: str
    verified_at: float
    refreshing: bool = False


class Authenticator:
    """The app's credentials: the verified ones remembered, the hash checks bounded."""

    def __init__(self, config, metrics):
        self.config = config
        self.metrics = metrics
        self.verified = VerifiedCredentials(config["AUTH_CACHE_SECONDS"])
        self.refresher = Refresher(self._refresh)
        self._hash_checks = threading.BoundedSemaphore(config["AUTH_PASSWORD_CHECKS"])
        self._checks = {}  # digest of (username, password) -> _Check in progress
        self._checks_lock = threading.Lock()
        self._serializer = URLSafeTimedSerializer(config["SECRET_KEY"], salt=TOKEN_SALT)

    def authenticate(self, authorization, users_version=None):
        """The principal the header value ``authorization`` proves, or None.

        Without ``users_version``, in a request: remembered credentials, else the hash or
        the user lookup, with the failed-login budgets applied (429) and the hash checks
        bounded (503). With it (the read cache): remembered credentials only.
        """
        parsed = credentials.parse(authorization)
        key = self._key(parsed) if parsed is not None else None
        if users_version is not None:
            return self.verified.lookup(users_version, key) if key else None
        # Read before the credentials are checked, so a change made meanwhile makes the
        # entry remembered below stale at once rather than missed.
        users_version = DataVersion.current().users
        if key is not None:
            remembered, claimed = self.verified.lookup_or_claim(users_version, key)
            if claimed and not self.refresher.submit(current_app._get_current_object(), parsed, key, users_version):
                self.verified.release(key)
            if remembered is not None:
                return remembered
        username = parsed.username if isinstance(parsed, credentials.Password) else None
        if authorization is not None:
            limits.refuse_failed_logins(username)
        found = self._verify(parsed, key)
        if found is None:
            if authorization is not None:
                limits.record_failed_login(username)
                self.metrics.failed_logins.inc()
            return None
        self.verified.remember(found, users_version, key)
        return found

    def _refresh(self, app, parsed, key, users_version):
        """Verify remembered credentials again (``Refresher``'s thread): remember them anew,
        forget them if they no longer prove their user, or leave the entry to a later claim."""
        try:
            with app.app_context():
                found = self._verify(parsed, key, bounded=False)
        except Exception:  # the database, say: the entry holds until its time runs out
            log.warning("credentials: a re-check failed; a later request tries again", exc_info=True)
            self.verified.release(key)
            return
        if found is None:
            self.verified.forget(key)
        else:
            self.verified.remember(found, users_version, key)

    def issue_token(self, principal):
        return self._serializer.dumps({"uid": principal.id, "stamp": principal.credential_stamp})

    def _key(self, parsed):
        """What identifies these credentials in the remembered ones; None for a bad token."""
        if isinstance(parsed, credentials.Password):
            return ("basic", parsed.username, parsed.password)
        try:
            # Signature and age: checked on every use, without the database.
            claims = self._serializer.loads(parsed.token, max_age=self.config["TOKEN_EXPIRATION"])
            return ("token", int(claims["uid"]), str(claims["stamp"]))
        except (BadSignature, KeyError, TypeError, ValueError, OverflowError):
            return None

    def _verify(self, parsed, key, bounded=True):
        """``bounded``: a request's check, coalesced with identical ones and within
        ``AUTH_PASSWORD_CHECKS``; a re-check of remembered credentials (one thread) is neither."""
        if key is None:
            return None
        if isinstance(parsed, credentials.Password):
            if not bounded:
                return self._hash_and_compare(parsed.username, parsed.password, bounded=False)
            return self._check_password(parsed.username, parsed.password)
        user = db.session.get(User, key[1])
        if user is None or key[2] != user.credential_stamp:
            return None
        return Principal.of(user, TOKEN)

    def _check_password(self, username, password):
        """The principal the password proves, else None; one hash for concurrent identical credentials.

        A burst of requests with credentials not yet remembered (a client's first, or any after
        a restart) waits for the one check instead of each meeting the cap on hash checks.
        """
        digest = self.verified.digest(("basic", username, password))
        with self._checks_lock:
            check = self._checks.get(digest)
            leading = check is None
            if leading:
                check = self._checks[digest] = _Check()
        if not leading:
            with turns.waiting():  # no CPU meanwhile: its turn given back
                checked = check.done.wait(SAME_CHECK_WAIT_SECONDS)
            if not checked:
                raise self._busy()
            if check.refusal is not None:
                raise check.refusal
            return check.principal
        try:
            check.principal = self._hash_and_compare(username, password)
            return check.principal
        except ServiceUnavailable as refusal:
            check.refusal = refusal
            raise
        finally:
            with self._checks_lock:
                del self._checks[digest]
            check.done.set()

    def _hash_and_compare(self, username, password, bounded=True):
        user = User.by_username(username)
        if bounded and not self._hash_checks.acquire(blocking=False):
            # No waiting: a waiting thread is one the verified users' requests cannot have.
            raise self._busy()
        try:
            self.metrics.password_hashes.inc()
            # The hash runs without the GIL (hashlib) and the semaphore above bounds how many run at
            # once: its turn is given back, so the worker's other requests run meanwhile (a hash held
            # one of two turns for 60-400 ms, each time a busy client's credentials were checked again).
            with turns.waiting():
                if user is None:
                    # Hash anyway, so an unknown name costs what a wrong password does.
                    check_password_hash(_decoy_hash(self.config["PASSWORD_HASH_METHOD"]), password)
                    return None
                if not user.verify_password(password):
                    return None
        finally:
            if bounded:
                self._hash_checks.release()
        return Principal.of(user, PASSWORD)

    @staticmethod
    def _busy():
        return ServiceUnavailable(
            "too many password checks at once; retry shortly", retry_after=HASH_RETRY_AFTER_SECONDS
        )


def authenticate(app, authorization, users_version=None):
    """``app``'s principal for the ``Authorization`` header value, or None (see ``Authenticator``)."""
    return app.extensions[EXTENSION].authenticate(authorization, users_version)


def issue_token(principal):
    """A signed token for ``principal``, valid for ``TOKEN_EXPIRATION`` seconds."""
    return current_app.extensions[EXTENSION].issue_token(principal)


@lru_cache(maxsize=4)
def _decoy_hash(method):
    return generate_password_hash("decoy password", method=method)


class _HeaderAuth(HTTPAuth):
    """flask-httpauth's login flow, with the header parsed and verified by ``authenticate``."""

    def get_auth(self):
        return request.headers.get("Authorization")

    def get_auth_password(self, auth):
        return None

    def authenticate(self, auth, stored_password):
        if auth is None:
            return None
        found = authenticate(current_app, auth)
        if found is not None:
            principal.set_current(found)
            request.environ[observability.USER] = found.username  # for the access line
        return found

    def authenticate_header(self):
        scheme = "Bearer" if credentials.is_bearer(request.headers.get("Authorization")) else "Basic"
        return f'{scheme} realm="{self.realm}"'


auth = _HeaderAuth(scheme="Basic", realm=REALM)


@auth.error_handler
def auth_error(status):
    """Auth failures use the API's JSON error body; flask-httpauth adds WWW-Authenticate."""
    message = "valid credentials required" if status == 401 else None
    return error_response(status, message)


def login_required(view):
    """Authenticate the request (basic or Bearer) before ``view``."""
    return auth.login_required(view)


def current_principal():
    return principal.current()


def password_required(view):
    """Let only a request proved by a password through: a token cannot mint a new token."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if principal.current().proved_by != PASSWORD:
            # Not a failed login: the token is valid, it just cannot outlive itself.
            return error_response(
                401,
                "a new token needs the user's password (basic auth), not a token",
                {"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )
        return view(*args, **kwargs)

    return wrapped


def admin_required(view):
    """Let only admin users through (403 for the others); runs after authentication."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not principal.current().is_admin:
            raise Forbidden("this request needs an admin user")
        return view(*args, **kwargs)

    return wrapped


def init_app(app):
    """Give ``app`` its credentials (remembered per app, hash checks bounded per process)."""
    app.extensions[EXTENSION] = Authenticator(app.config, observability.metrics(app))
