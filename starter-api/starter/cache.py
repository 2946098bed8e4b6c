"""An in-process cache whose misses are computed once, however many threads miss at once.

Without it, a popular page that falls out of the cache (or a new data version)
sends every waiting thread to the database with the same query at once.
"""

import threading

from cachetools import LRUCache, cached


class ComputedCache:
    """Values by key, bounded (least recently used first out), each computed by one thread.

    cachetools' ``cached`` with a condition: a thread that misses a key another
    thread is computing waits for that value instead of computing it again.
    """

    def __init__(self, maxsize):
        self._entries = LRUCache(maxsize)
        condition = threading.Condition()
        self._get = cached(
            self._entries, key=lambda key, compute: key, lock=condition, condition=condition
        )(lambda key, compute: compute())
        self._condition = condition

    def get_or_compute(self, key, compute):
        """Return the value for ``key``, calling ``compute()`` only if no thread has it or is on it."""
        return self._get(key, compute)

    def clear(self):
        self._get.cache_clear()

    def __len__(self):
        with self._condition:
            return len(self._entries)
