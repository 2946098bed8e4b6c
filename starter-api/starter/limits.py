"""Rate limits (flask-limiter): per address, per user, and harder on failed logins.

Counters live in ``RATELIMIT_STORAGE_URI``. In Redis (the Compose stack) every worker and
replica shares them, and no limit is exceeded (taken in batches, a limit of 128 or more per
window may refuse a bounded number of requests early: docs/api.md). ``memory://`` is per
process: no counter is shared between granian's workers, so each of the ``WEB_CONCURRENCY``
workers allows its share of every limit (the amount divided by the workers, at least one).
A client never gets more than the limit; it may be refused a little earlier, as its requests
need not spread evenly over the workers.

In Redis, every limit of an API request, and the values of its headers, cost one round trip
(``redislimits``: a script, in flask-limiter's own keys), by either path: Flask (``per_user``
announces the two buckets that flask-limiter then hits) or the read cache's replays
(``count_together``). With ``RATELIMIT_BATCH`` > 1, a worker takes an API request's hits from
Redis in batches and most requests cost no round trip (docs/api.md, "Counters taken in
batches"); failed logins are counted one at a time.

Failed logins are counted twice: per user name (a guessed password) and, looser, per
address (names sprayed from one place). Only credentials the app has not verified
recently are refused while a budget is used up: a user whose credentials were just
proved keeps working, whoever guesses at the same name or from the same address.
"""

import functools
import hashlib
import time
from functools import lru_cache

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse
from limits.errors import StorageError
from limits.storage import RedisClusterStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from . import observability, principal, redislimits


def budget(config, setting):
    """The limit named by ``setting`` as this process enforces it (see the module docstring)."""
    memory = config["RATELIMIT_STORAGE_URI"].startswith("memory://")
    return _share(config[setting], config["WORKER_PROCESSES"] if memory else 1)


@lru_cache(maxsize=64)
def _share(limit, processes):
    item = parse(limit)
    if processes <= 1:
        return item
    return type(item)(max(1, item.amount // processes), item.multiples, item.namespace)


def _configured(setting):
    # Read from the app's config per request, so the environment sets the limits and
    # each app of a test run gets its own.
    return lambda: str(budget(current_app.config, setting))


def _count_refusal(request_limit):
    """flask-limiter's breach hook: count the 429 by its limit (a shared limit's scope)."""
    which = request_limit.request_args[-1] if request_limit.shared else "per-address"
    observability.metrics(current_app).rate_limited.labels(which).inc()


limiter = Limiter(
    key_func=get_remote_address,
    default_limits=[_configured("RATELIMIT_PER_ADDRESS")],
    on_breach=_count_refusal,
)

PER_USER_SCOPE = "per-user"
FAILED_LOGINS_PER_USER_SCOPE = "failed-login-user"
FAILED_LOGINS_PER_ADDRESS_SCOPE = "failed-login-address"


def user_key(username):
    return f"user:{username}"


def _current_user_key():
    # The per-user limit wraps the view, so authentication has run.
    return user_key(principal.current().username)


_per_user_limit = limiter.shared_limit(
    _configured("RATELIMIT_PER_USER"),
    scope=PER_USER_SCOPE,
    key_func=_current_user_key,
    override_defaults=False,  # the per-address limit still applies
)


def per_user(view):
    """Every API view carries this: a budget per authenticated user (and the per-address one)."""
    limited = _per_user_limit(view)

    @functools.wraps(limited)  # the same qualified name: flask-limiter finds its limits by it
    def counted_in_one_trip(*args, **kwargs):
        if isinstance(limiter.limiter, redislimits.OneTripFixedWindow):
            user = principal.current()
            if user is not None:
                buckets, _ = request_buckets(
                    current_app.config, get_remote_address(), user.username, request.endpoint)
                redislimits.expect(buckets)
        return limited(*args, **kwargs)

    return counted_in_one_trip


def request_buckets(config, address, username, endpoint):
    """The ``(limit, keys)`` an API request is counted in, in the order flask-limiter hits them
    (by window; a stable sort), and the one its headers show: ``(buckets, per_address)``."""
    prefix = [config["RATELIMIT_KEY_PREFIX"]] if config.get("RATELIMIT_KEY_PREFIX") else []
    per_address = (budget(config, "RATELIMIT_PER_ADDRESS"), [*prefix, address, endpoint])
    per_user = (budget(config, "RATELIMIT_PER_USER"), [*prefix, user_key(username), PER_USER_SCOPE])
    return sorted([per_address, per_user], key=lambda bucket: bucket[0]), per_address


def count_together(buckets, shown, batches=None):
    """Hit ``buckets`` in order until one refuses, as flask-limiter would. The window
    ``(reset, remaining)`` of ``shown`` (one of them) if all admit the request, ``()`` for
    ``shown=None``, else None. In Redis, one round trip, or none with a hit of each bucket in
    ``batches`` (the app's ``batches(app)``); may raise ``StorageError``."""
    strategy = limiter.limiter
    if isinstance(strategy, redislimits.OneTripFixedWindow):
        counted = strategy.count(buckets, batches)  # stops at the first refusal
        if len(counted) < len(buckets) or counted[-1][0] > buckets[-1][0].amount:
            return None
        if shown is None:
            return ()
        count, reset = counted[buckets.index(shown)]
        return reset, max(0, shown[0].amount - count)
    for item, keys in buckets:
        if not strategy.hit(item, *keys):
            return None
    return () if shown is None else tuple(strategy.get_window_stats(shown[0], *shown[1]))


def _failed_login_buckets(username):
    """(limit, keys) of the failed-login budgets this attempt counts against."""
    config = current_app.config
    prefix = [config["RATELIMIT_KEY_PREFIX"]] if config.get("RATELIMIT_KEY_PREFIX") else []
    buckets = [
        (budget(config, "RATELIMIT_FAILED_LOGINS_PER_ADDRESS"),
         [*prefix, FAILED_LOGINS_PER_ADDRESS_SCOPE, get_remote_address()], "from this address"),
    ]
    if username is not None:
        # A digest: any string a client sends makes a short key of fixed form.
        name = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        buckets.append((budget(config, "RATELIMIT_FAILED_LOGINS"),
                        [*prefix, FAILED_LOGINS_PER_USER_SCOPE, name], "for this user name"))
    return buckets


def refuse_failed_logins(username=None):
    """429 while this address, or the user name of a password, has used up its failed-login budget."""
    if not limiter.enabled:
        return
    strategy = limiter.limiter
    try:
        for item, keys, which in _failed_login_buckets(username):
            if not strategy.test(item, *keys):
                reset_at, _ = strategy.get_window_stats(item, *keys)
                observability.metrics(current_app).rate_limited.labels(keys[-2]).inc()  # its scope
                raise TooManyRequests(
                    f"too many failed logins {which}; retry later",
                    retry_after=max(1, int(reset_at - time.time())),
                )
    except StorageError as exc:
        _storage_unavailable(exc)


def record_failed_login(username=None):
    """Count rejected credentials against this address (and the user name of a password)."""
    if not limiter.enabled:
        return
    try:
        for item, keys, _ in _failed_login_buckets(username):
            limiter.limiter.hit(item, *keys)
    except StorageError as exc:
        _storage_unavailable(exc)


def _storage_unavailable(exc):
    # Serving matters more than counting: flask-limiter falls back to memory for
    # its own limits; the failed-login budgets are skipped until the store is back.
    current_app.logger.warning("rate-limit storage unavailable: %s", exc)


def _retry_after_only_on_refusals(response):
    # flask-limiter sends Retry-After with every answer; on a 200 it means nothing (RFC 9110
    # §10.2.3) and flips between 0 and 1 within the window's last second.
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response


def init_app(app):
    """Bind the limiter; the per-address limit applies to every request."""
    # Registered first, so it runs after flask-limiter's own hook has added its headers.
    app.after_request(_retry_after_only_on_refusals)
    limiter.init_app(app)
    storage = limiter.storage if limiter.enabled else None
    if (
        type(limiter.limiter) is FixedWindowRateLimiter  # flask-limiter's default strategy
        and isinstance(storage, RedisStorage)
        and not isinstance(storage, RedisClusterStorage)  # one script's keys may be on many nodes
    ):
        # The same strategy, in fewer round trips (redislimits). flask-limiter takes only a
        # strategy's name: its instance is set in its place.
        limiter._limiter = redislimits.OneTripFixedWindow(storage)
        if app.config.get("RATELIMIT_BATCH", 1) > 1:
            app.extensions[redislimits.BATCHES] = redislimits.Batches(app.config["RATELIMIT_BATCH"])


def batches(app):
    """The app's batches of hits counted in Redis and not yet spent (None: one hit at a time)."""
    return app.extensions.get(redislimits.BATCHES)
