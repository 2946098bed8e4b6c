"""When the database counts as down (``starter.dbhealth``): a loaded machine is not a hung database.

Against a private PostgreSQL (``servers.py``) behind a proxy that can delay new connections (as a
machine at load average 30 starts backends slowly) and a server that can be stopped (SIGSTOP).
"""

import time

import pytest
from servers import BlackHoleProxy, wait_for

from starter.db import engine_options
from starter.dbhealth import DatabaseHealth, install_wait_callback

PROBE_TIMEOUT = 0.5
SLOW_START = 1.0  # beyond the probe's time: a fresh connection alone would say "down"


@pytest.fixture
def proxy(private_postgres):
    proxy = BlackHoleProxy(private_postgres.port)
    yield proxy
    proxy.close()


@pytest.fixture
def health(private_postgres, proxy):
    url = private_postgres.url("postgres").replace(f":{private_postgres.port}/", f":{proxy.port}/")
    connect_args = engine_options(url, 2, 2000)["connect_args"]
    install_wait_callback()
    health = DatabaseHealth(url, connect_args, 2, 2000, PROBE_TIMEOUT)
    yield health
    health.stop()


def test_a_database_slow_to_connect_but_answering_is_not_down(health, proxy):
    assert health.check_now()  # the probe keeps this connection for a second opinion
    proxy.slow_start(SLOW_START)
    started = time.monotonic()
    assert health.check_now(), "a slow new connection counted as an outage"
    assert not health.down
    assert time.monotonic() - started >= PROBE_TIMEOUT  # the fresh one was asked first, and waited for
    proxy.slow_start(0)
    assert health.check_now()


def test_without_a_connection_to_ask_a_slow_start_is_not_an_outage(health, proxy):
    """A process's first probe (a command's, e.g. the stack's migrate at load average 30) has no
    second opinion: its fresh connection gets DB_CONNECT_TIMEOUT (2 s here), not the probe's 0.5 s."""
    proxy.slow_start(SLOW_START)
    started = time.monotonic()
    assert health.check_now(), "a slow first connection counted as an outage"
    assert not health.down
    assert time.monotonic() - started >= SLOW_START


def test_without_a_connection_to_ask_a_hung_database_is_down_within_the_connect_timeout(health, private_postgres):
    private_postgres.freeze()
    try:
        started = time.monotonic()
        assert not health.check_now()
        assert health.down
        assert time.monotonic() - started < 2 + 0.5
    finally:
        private_postgres.thaw()


def test_a_hung_database_is_down_within_the_probe_timeout(health, private_postgres):
    assert health.check_now()
    private_postgres.freeze()
    try:
        started = time.monotonic()
        assert not health.check_now()
        elapsed = time.monotonic() - started
        assert health.down
        assert elapsed < PROBE_TIMEOUT + 0.3, f"down after {elapsed:.2f} s"  # no second wait
    finally:
        private_postgres.thaw()
    # Found by check_now (/readyz) alone: the probe thread still looks again until it answers.
    assert wait_for(lambda: not health.down, 5), "still down after the database answered again"
    assert health.check_now()


def test_refused_connections_are_an_outage_at_once(health, proxy):
    """Not a slow answer: no second opinion is waited for."""
    assert health.check_now()
    proxy.close()  # nothing listens on its port any more
    started = time.monotonic()
    assert not health.check_now()
    assert time.monotonic() - started < PROBE_TIMEOUT
