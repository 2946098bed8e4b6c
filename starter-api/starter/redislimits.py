"""flask-limiter's fixed window in Redis: all of a request's limits in one round trip, or in none.

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
  answered from that one call. A hit of anything else is counted on its own, as before;
* with ``Batches`` (``RATELIMIT_BATCH`` > 1; docs/api.md, "Counters taken in batches") the script
  adds a batch of hits to a bucket at once, at most 1/``SHARE`` of what is left of its limit (so
  a limit under 2 x ``SHARE`` is counted one hit at a time), and the worker spends the hits
  beyond its request's own locally, until they are spent or the window ends. Every hit it
  admits has its own place in the Redis count, at or below the limit, in the window that counted
  it: no limit is ever exceeded; hits reserved and not spent make other workers refuse early.
"""

import threading
import time

from cachetools import TLRUCache
from flask import current_app, has_request_context, request
from limits.errors import StorageError
from limits.strategies import FixedWindowRateLimiter
from limits.util import WindowStats

EXPECTED = "starter.limits.expected"  # environ: [(item, keys)] flask-limiter is about to hit
_PENDING = "starter.limits.pending"  # environ: {key: (count, reset)} counted, not yet hit
_SEEN = "starter.limits.seen"  # environ: {key: (count, reset)} hit in this request
BATCHES = "starter.ratelimit_batches"  # app.extensions: this worker's Batches, if batched

# A batch takes at most this share of what is left of a limit: the workers of every replica
# together hold few of the hits a limit has left, and a limit under 2 x SHARE stays exact.
SHARE = 64
WAIT = 1.0  # seconds a thread waits for another's batch (the calls time out after 0.5 s)

# KEYS: the buckets in order; ARGV: SHARE, then each one's limit, window (seconds) and largest
# batch. limits' own script (incr_expire.lua: INCRBY, EXPIRE on the first) per bucket, with the
# batch's size and the key's PTTL (the window's end: TTL is rounded to a second).
SCRIPT = """
local answer = {}
local share = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[3 * i - 1])
    local batch = tonumber(ARGV[3 * i + 1])
    if batch > 1 then
        local left = limit - tonumber(redis.call("get", key) or "0")
        batch = math.max(1, math.min(batch, math.floor(left / share)))
    end
    local count = redis.call("incrby", key, batch)
    if count == batch then
        redis.call("expire", key, ARGV[3 * i])
    end
    answer[#answer + 1] = count
    answer[#answer + 1] = batch
    answer[#answer + 1] = redis.call("pttl", key)
    if count - batch >= limit then
        break
    end
end
return answer
"""


class Batches:
    """One worker's hits counted in Redis and not spent yet (app.extensions[BATCHES]): per key,
    the places ``first..last`` in the count, usable until the window's end as Redis said it."""

    def __init__(self, size, keys=4096, timer=time.monotonic):
        self.size = size
        self._timer = timer
        self._lock = threading.Condition()  # the worker's threads share the batches
        # key: [first, last, expires (monotonic), reset (time.time)]. Gone with the window; the
        # least recently used first if there are many.
        self._spare = TLRUCache(keys, ttu=lambda _key, spare, _now: spare[2], timer=timer)
        self._reserving = set()  # keys a thread is taking a batch of

    def take(self, key, wait=WAIT):
        """The next place of ``key``'s batch and its window's reset time, if one is held or (after
        waiting) another thread was taking one; else claims a batch (``claim``): ``(hit, claimed)``.
        The thread that would have made its own call meanwhile waits for that one instead."""
        with self._lock:
            while True:
                spare = self._spare.get(key)
                if spare is not None:
                    place = spare[0]
                    spare[0] += 1
                    if spare[0] > spare[1]:
                        # pop: the window may have ended since the get (del would raise).
                        self._spare.pop(key, None)
                    return (place, spare[3]), False
                if key not in self._reserving:
                    self._reserving.add(key)
                    return None, True
                if not self._lock.wait(wait):
                    return None, False

    def has(self, key):
        with self._lock:
            return key in self._spare

    def claim(self, key):
        """True if the caller may take a batch of ``key``: none is held or being taken (else it
        asks for its request's own hit only). So a worker holds at most one batch of a bucket,
        whatever its threads do: the bound in docs/api.md."""
        with self._lock:
            if key in self._reserving or key in self._spare:
                return False
            self._reserving.add(key)
            return True

    def keep(self, key, first, last, expires, reset):
        """Places ``first..last`` of ``key``, until ``expires`` (monotonic), reset at ``reset``."""
        with self._lock:
            if first <= last and expires > self._timer():
                self._spare[key] = [first, last, expires, reset]

    def release(self, key):
        """End a claim (after ``keep``, or instead of it)."""
        with self._lock:
            self._reserving.discard(key)
            self._lock.notify_all()


class OneTripFixedWindow(FixedWindowRateLimiter):
    """``FixedWindowRateLimiter`` over a ``RedisStorage``; see the module's docstring."""

    def __init__(self, storage):
        super().__init__(storage)
        self._script = storage.get_connection().register_script(SCRIPT)  # EVALSHA from then on

    def _reserve(self, buckets, sizes):
        """One script call, asking each bucket for at most its size of ``sizes``: ``(first, last,
        expires, reset)`` of each bucket counted, in order, until one is past its limit; ``first``
        is the request's own hit."""
        storage = self.storage
        keys = [storage.prefixed_key(item.key_for(*ids)) for item, ids in buckets]
        args = [SHARE]
        for (item, _), size in zip(buckets, sizes):
            args += [item.amount, item.get_expiry(), size]
        sent, sent_at = time.monotonic(), time.time()  # before: a batch never outlives its key
        try:
            answer = self._script(keys=keys, args=args)
        except storage.base_exceptions as exc:
            if storage.wrap_exceptions:
                raise StorageError(exc) from exc
            raise
        counted = []
        for count, batch, pttl in zip(answer[::3], answer[1::3], answer[2::3]):
            left = max(pttl, 0) / 1000
            counted.append((count - batch + 1, count, sent + left, sent_at + left))
        return counted

    def count(self, buckets, batches=None):
        """Hit ``buckets`` (``(item, keys)``, in order) until one is past its limit: ``(count,
        reset time)`` of each bucket counted. One script call, or none if ``batches`` holds a hit
        of every bucket."""
        if batches is None:
            return [(first, reset) for first, _, _, reset in self._reserve(buckets, [1] * len(buckets))]
        keys = [item.key_for(*ids) for item, ids in buckets]
        reserved = {}  # key: this request's place in a batch just reserved
        counted = []
        for at, ((item, _), key) in enumerate(zip(buckets, keys)):
            hit = reserved.get(key)
            if hit is None:
                hit, mine = batches.take(key)
            if hit is None:
                # This bucket and the later ones with no hit in hand, together.
                later = [index for index in range(at + 1, len(buckets))
                         if keys[index] not in reserved and not batches.has(keys[index])]
                trip = [at, *later]
                claimed = [mine] + [batches.claim(keys[index]) for index in later]
                try:
                    answers = self._reserve([buckets[index] for index in trip],
                                            [batches.size if mine else 1 for mine in claimed])
                    for index, mine, (first, last, expires, reset) in zip(trip, claimed, answers):
                        if mine:
                            batches.keep(keys[index], first + 1, last, expires, reset)
                        reserved[keys[index]] = (first, reset)
                finally:  # the claims end, kept or not (an error; a bucket after a refusal)
                    for index, mine in zip(trip, claimed):
                        if mine:
                            batches.release(keys[index])
                hit = reserved[key]
            counted.append(hit)
            if hit[0] > item.amount:
                break
        return counted

    def hit(self, item, *identifiers, cost=1):
        if cost != 1 or not has_request_context():
            return super().hit(item, *identifiers, cost=cost)
        environ = request.environ
        key = item.key_for(*identifiers)
        pending = environ.setdefault(_PENDING, {})
        if key not in pending:
            expected = environ.pop(EXPECTED, ())
            batches = current_app.extensions.get(BATCHES)
            if not any(item.key_for(*ids) == key for item, ids in expected):
                # Not an API request's (a failed login's): one hit at a time, exact.
                expected, batches = [(item, identifiers)], None
            keys = [item.key_for(*ids) for item, ids in expected]
            pending.update(zip(keys, self.count(expected, batches)))
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
