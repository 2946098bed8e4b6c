"""Rate limits (flask-limiter): per address, per user, and harder on failed logins.

Counters live in ``RATELIMIT_STORAGE_URI``: Redis in the Compose stack, so every
worker and replica shares them; in memory (per process) for the embedded run.
"""

import time
from functools import lru_cache

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse
from limits.errors import StorageError
from werkzeug.exceptions import TooManyRequests

# Limits are read from the app's config per request (callables), so the
# environment sets them and each app of a test run gets its own.
limiter = Limiter(
    key_func=get_remote_address,
    default_limits=[lambda: current_app.config["RATELIMIT_PER_ADDRESS"]],
)

FAILED_LOGIN_SCOPE = "failed-login"
PER_USER_SCOPE = "per-user"
# The headers flask-limiter adds (its default names): every answer gets its own.
HEADERS = frozenset({"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"})


def user_key(username):
    return f"user:{username}"


def _user_key():
    # Runs after authentication (the limit wraps the view), so the user is known.
    from .auth import auth

    return user_key(auth.current_user().username)


# Every API view carries this: a budget per authenticated user.
per_user = limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_PER_USER"],
    scope=PER_USER_SCOPE,
    key_func=_user_key,
    override_defaults=False,  # the per-address limit still applies
)


@lru_cache(maxsize=32)
def _parsed(limit):
    return parse(limit)


def _failed_login_limit():
    return _parsed(current_app.config["RATELIMIT_FAILED_LOGINS"])


def refuse_after_failed_logins():
    """429 while this address has used up its failed-login budget."""
    if not limiter.enabled:
        return
    item = _failed_login_limit()
    address = get_remote_address()
    try:
        if limiter.limiter.test(item, FAILED_LOGIN_SCOPE, address):
            return
        reset_at, _ = limiter.limiter.get_window_stats(item, FAILED_LOGIN_SCOPE, address)
    except StorageError as exc:
        _storage_unavailable(exc)
        return
    raise TooManyRequests(
        "too many failed logins from this address; retry later",
        retry_after=max(1, int(reset_at - time.time())),
    )


def record_failed_login():
    """Count a rejected credential against this address."""
    if limiter.enabled and "Authorization" in request.headers:
        try:
            limiter.limiter.hit(_failed_login_limit(), FAILED_LOGIN_SCOPE, get_remote_address())
        except StorageError as exc:
            _storage_unavailable(exc)


class Admission:
    """The limits Flask would apply, for a request answered without it (the read cache).

    Same buckets as flask-limiter's: the per-address default limit counted per
    endpoint, the per-user shared limit, the failed-login budget (tested, not
    counted); the same headers, from the per-address limit as flask-limiter
    picks it. ``admit`` returns the headers, or None to let Flask answer: a
    limit reached (Flask says 429), or the store unreachable (Flask falls back
    to counting in memory).
    """

    def __init__(self, config):
        self._config = config
        self._store_down_until = 0.0

    def admit(self, address, username, endpoint):
        if not limiter.enabled:
            return []
        if time.monotonic() < self._store_down_until:
            return None
        config = self._config
        prefix = [config["RATELIMIT_KEY_PREFIX"]] if config.get("RATELIMIT_KEY_PREFIX") else []
        per_address = (_parsed(config["RATELIMIT_PER_ADDRESS"]), [*prefix, address, endpoint])
        per_user = (
            _parsed(config["RATELIMIT_PER_USER"]),
            [*prefix, user_key(username), PER_USER_SCOPE],
        )
        failed_logins = _parsed(config["RATELIMIT_FAILED_LOGINS"])
        strategy = limiter.limiter
        try:
            if not strategy.test(failed_logins, FAILED_LOGIN_SCOPE, address):
                return None
            for item, keys in (per_address, per_user):
                if not strategy.hit(item, *keys):
                    # Flask counts it again and answers 429: a refused request may count
                    # twice, which only ever errs on the strict side.
                    return None
            if not config.get("RATELIMIT_HEADERS_ENABLED"):
                return []
            reset_time, remaining = strategy.get_window_stats(per_address[0], *per_address[1])
        except StorageError:
            self._store_down_until = time.monotonic() + 1.0
            return None
        reset_at = int(reset_time + 1)
        return [
            ("X-RateLimit-Limit", str(per_address[0].amount)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(reset_at)),
            ("Retry-After", str(int(reset_at - time.time()))),
        ]


def _storage_unavailable(exc):
    # Serving matters more than counting: flask-limiter falls back to memory for
    # its own limits; the failed-login budget is skipped until the store is back.
    current_app.logger.warning("rate-limit storage unavailable: %s", exc)


def init_app(app):
    """Bind the limiter; the per-address limit applies to every request."""
    limiter.init_app(app)
