"""The rate limits a replay must pass: the ones Flask would apply, in flask-limiter's own buckets."""

import time

from limits.errors import StorageError

from ..limits import count_together, limiter, request_buckets

# The headers flask-limiter adds (its default names): every answer gets its own, replays too.
LIMIT_HEADERS = frozenset({"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"})


class Admission:
    """The limits Flask would apply, for a request answered without it (the read cache).

    Same buckets as flask-limiter's: the per-address default limit counted per
    endpoint, the per-user shared limit; the same headers, from the per-address limit
    as flask-limiter picks it. The failed-login budgets do not apply: a replay is only
    ever for credentials the app verified recently. ``admit`` returns the headers, or
    None to let Flask answer: a limit reached (Flask says 429), or the store unreachable
    (Flask falls back to counting in memory).
    """

    def __init__(self, config, batches=None):
        self._config = config
        self._batches = batches  # limits.batches(app)
        self._store_down_until = 0.0

    def admit(self, address, username, endpoint):
        if not limiter.enabled:
            return []
        if time.monotonic() < self._store_down_until:
            return None
        config = self._config
        buckets, per_address = request_buckets(config, address, username, endpoint)
        try:
            # One round trip in Redis at most (limits.count_together).
            shown = per_address if config.get("RATELIMIT_HEADERS_ENABLED") else None
            window = count_together(buckets, shown, self._batches)
        except StorageError:
            self._store_down_until = time.monotonic() + 1.0
            return None
        if window is None:
            # Flask counts it again and answers 429: a refused request may count
            # twice, which only ever errs on the strict side.
            return None
        if not window:
            return []
        reset_time, remaining = window
        # As Flask's answers: no Retry-After on a 200 (limits.py).
        return [
            ("X-RateLimit-Limit", str(per_address[0].amount)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(int(reset_time + 1))),
        ]
