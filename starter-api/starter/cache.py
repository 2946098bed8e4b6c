"""An in-process cache whose misses are computed once, however many threads miss at once.

Without it, a popular page that falls out of the cache (or a new data version)
sends every waiting thread to the database with the same query at once.
"""

import threading

from cachetools import LRUCache


class ComputedCache:
    """Values by key, bounded (least recently used first out), each computed by one thread."""

    def __init__(self, maxsize):
        self._entries = LRUCache(maxsize)
        self._lock = threading.Lock()
        self._in_flight = {}

    def get_or_compute(self, key, compute):
        """Return the value for ``key``, calling ``compute()`` only if no thread has it or is on it."""
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            gate = self._in_flight.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            try:
                value = compute()
                with self._lock:
                    self._entries[key] = value
            finally:
                with self._lock:
                    self._in_flight.pop(key, None)
        return value

    def clear(self):
        with self._lock:
            self._entries.clear()

    def __len__(self):
        with self._lock:
            return len(self._entries)
