"""The computed cache: one computation per key, however many threads miss at once."""

import threading
import time

import pytest

from starter.cache import ComputedCache


def test_concurrent_misses_compute_once():
    cache = ComputedCache(8)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return "value"

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == ["value"] * 8
    assert len(calls) == 1


def test_a_failed_computation_is_not_cached_and_not_stuck():
    cache = ComputedCache(8)

    def fails():
        raise ValueError("no")

    with pytest.raises(ValueError):
        cache.get_or_compute("k", fails)
    assert cache.get_or_compute("k", lambda: 2) == 2


def test_bounded_least_recently_used_first_out():
    cache = ComputedCache(2)
    for key in "abc":
        cache.get_or_compute(key, lambda key=key: key.upper())
    assert len(cache) == 2
    assert cache.get_or_compute("a", lambda: "recomputed") == "recomputed"
