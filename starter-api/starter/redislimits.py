"""flask-limiter's fixed window in Redis, with all of a request's limits counted in one round trip.

flask-limiter hits a request's limits one by one (a script call each), then reads the window of
the one its headers show (GET and TTL): four round trips for an API read. ``OneTripFixedWindow``
is the same strategy, the same keys and the same window (a counter that expires its window's
length after its first hit), so its counts are shared with any worker or replica counting with
stock flask-limiter; only the round trips change:

* ``count(buckets)``: one Lua script increments the buckets in order, stopping after the first
  one past its limit (flask-limiter's ``fail_on_first_breach``: a refused request is not counted
  by the limits after it), and answers each count with its time to live;
* a request whose buckets were announced (``expect``) has them all counted at flask-limiter's
  first hit of one of them; its other hits of them, and the window reads for its headers, are
  answered from that one call. A hit of anything else is counted on its own, as before.
"""

import time

from flask import has_request_context, request
from limits.errors import StorageError
from limits.strategies import FixedWindowRateLimiter
from limits.util import WindowStats

EXPECTED = "starter.limits.expected"  # environ: [(item, keys)] flask-limiter is about to hit
_PENDING = "starter.limits.pending"  # environ: {key: (count, reset)} counted, not yet hit
_SEEN = "starter.limits.seen"  # environ: {key: (count, reset)} hit in this request

# KEYS: the buckets in order; ARGV: each one's limit and window (seconds). limits' own script
# (incr_expire.lua) per bucket, and its TTL, which flask-limiter reads for the headers.
SCRIPT = """
local answer = {}
for i, key in ipairs(KEYS) do
    local count = redis.call("incr", key)
    if count == 1 then
        redis.call("expire", key, ARGV[2 * i])
    end
    answer[#answer + 1] = count
    answer[#answer + 1] = redis.call("ttl", key)
    if count > tonumber(ARGV[2 * i - 1]) then
        break
    end
end
return answer
"""


class OneTripFixedWindow(FixedWindowRateLimiter):
    """``FixedWindowRateLimiter`` over a ``RedisStorage``; see the module's docstring."""

    def __init__(self, storage):
        super().__init__(storage)
        self._script = storage.get_connection().register_script(SCRIPT)  # EVALSHA from then on

    def count(self, buckets):
        """Hit ``buckets`` (``(item, keys)``, in order) until one is past its limit, in one call:
        ``(count, reset time)`` of each bucket counted."""
        storage = self.storage
        keys = [storage.prefixed_key(item.key_for(*ids)) for item, ids in buckets]
        args = [value for item, _ in buckets for value in (item.amount, item.get_expiry())]
        try:
            answer = self._script(keys=keys, args=args)
        except storage.base_exceptions as exc:
            if storage.wrap_exceptions:
                raise StorageError(exc) from exc
            raise
        now = time.time()
        return [(count, now + max(ttl, 0)) for count, ttl in zip(answer[::2], answer[1::2])]

    def hit(self, item, *identifiers, cost=1):
        if cost != 1 or not has_request_context():
            return super().hit(item, *identifiers, cost=cost)
        environ = request.environ
        key = item.key_for(*identifiers)
        pending = environ.setdefault(_PENDING, {})
        if key not in pending:
            expected = environ.pop(EXPECTED, ())
            if not any(item.key_for(*ids) == key for item, ids in expected):
                expected = [(item, identifiers)]
            keys = [item.key_for(*ids) for item, ids in expected]
            pending.update(zip(keys, self.count(expected)))
        counted = pending.pop(key, None)
        if counted is None:  # an earlier bucket refused the request: flask-limiter stops there
            counted = self.count([(item, identifiers)])[0]
        environ.setdefault(_SEEN, {})[key] = counted
        return counted[0] <= item.amount

    def get_window_stats(self, item, *identifiers):
        seen = request.environ.get(_SEEN, {}) if has_request_context() else {}
        counted = seen.get(item.key_for(*identifiers))
        if counted is None:
            return super().get_window_stats(item, *identifiers)
        count, reset = counted
        return WindowStats(reset, max(0, item.amount - count))


def expect(buckets):
    """Announce the buckets flask-limiter is about to hit for this request, in its order."""
    request.environ[EXPECTED] = buckets
