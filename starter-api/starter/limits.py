"""Rate limits (flask-limiter): per address, per user, and harder on failed logins.

Counters live in ``RATELIMIT_STORAGE_URI``: Redis in the Compose stack, so every
worker and replica shares them; in memory (per process) for the embedded run.
"""

import time

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


def _user_key():
    # Runs after authentication (the limit wraps the view), so the user is known.
    from .auth import auth

    return f"user:{auth.current_user().username}"


# Every API view carries this: a budget per authenticated user.
per_user = limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_PER_USER"],
    scope="per-user",
    key_func=_user_key,
    override_defaults=False,  # the per-address limit still applies
)


def _failed_login_limit():
    return parse(current_app.config["RATELIMIT_FAILED_LOGINS"])


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


def _storage_unavailable(exc):
    # Serving matters more than counting: flask-limiter falls back to memory for
    # its own limits; the failed-login budget is skipped until the store is back.
    current_app.logger.warning("rate-limit storage unavailable: %s", exc)


def init_app(app):
    """Bind the limiter; the per-address limit applies to every request."""
    limiter.init_app(app)
