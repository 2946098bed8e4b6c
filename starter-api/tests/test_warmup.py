"""A server worker warm before it takes traffic (``starter.warmup``), and workers waiting for each other."""

import gc
import os
import subprocess
import sys
import time

import pytest
import requests
from sqlalchemy import event

from starter import create_app, pagekeys, queries, readcache, warmup
from starter.api.pxcodes import page_caches
from starter.db import db

from helpers import redis_limits

MIDDLE = "/api/v1.0/pxcodes/?per_page=10&page=5"


@pytest.fixture
def database_url(migrated_postgres_url):
    return migrated_postgres_url


@pytest.fixture
def by_anchors(monkeypatch):
    """Every page of the 100 codes from anchors, as a deep page of a million is."""
    monkeypatch.setattr(queries, "OFFSET_SCAN_MAX", -1)
    monkeypatch.setattr(pagekeys, "SPACING", 3)


@pytest.fixture
def warm_app(make_seeded_app, by_anchors):
    app = make_seeded_app(READ_CACHE=True, READ_CACHE_MAX_STALE=60.0, SERVER_THREADS=3, WARMUP_TIMEOUT=20,
                          **redis_limits())
    yield app
    readcache.close(app)


@pytest.fixture
def unfreezing():
    yield
    gc.unfreeze()


def test_a_warm_worker_holds_what_its_first_requests_would_make(warm_app, unfreezing):
    steps = warmup.warm(warm_app)
    assert gc.get_freeze_count() > 0  # start-up's objects out of full collections
    assert set(steps) == {"probe", "connections", "version watch", "rate limits", "requests"}
    assert None not in steps.values(), steps
    with warm_app.app_context():
        assert db.engine.pool.checkedin() >= 3  # one open connection per request thread
    assert readcache.of(warm_app).watch.known() is not None  # replays from the first request on
    pager, _ = page_caches(warm_app)
    assert set(pager._anchors._sets) == {"pxcode", "procedure"}


def test_the_first_deep_page_after_warm_up_builds_nothing(warm_app, auth, monkeypatch, unfreezing):
    warmup.warm(warm_app)
    built = []
    build = pagekeys._build
    monkeypatch.setattr(pagekeys, "_build", lambda order: built.append(order) or build(order))
    statements = []
    with warm_app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        client = warm_app.test_client()
        for sort in ("pxcode", "procedure"):
            response = client.get(MIDDLE + "&sort=" + sort, headers=auth.basic())
            assert response.status_code == 200
            assert response.json["meta"]["page"] == 5 and len(response.json["items"]) == 10
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert built == []
    assert not any("row_number" in statement for statement in statements)


def test_warm_up_is_off_with_a_zero_timeout(make_seeded_app):
    assert warmup.warm(make_seeded_app(WARMUP_TIMEOUT=0)) == {}


def test_a_database_that_refuses_connections_makes_the_warm_up_short(unfreezing):
    """Every step skipped and logged; the worker then starts, and /readyz says the database is down."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg2://postgres@127.0.0.1:1/none",
                      "SECRET_KEY": "test", "LOG_DIR": None, "DB_CONNECT_TIMEOUT": 1, "WARMUP_TIMEOUT": 5})
    started = time.monotonic()
    steps = warmup.warm(app)
    assert time.monotonic() - started < 5
    assert steps["probe"] is None and steps["connections"] is None


def test_a_worker_waits_for_the_others_to_be_warm(make_seeded_app, tmp_path):
    app = make_seeded_app(WORKER_PROCESSES=2, WARMUP_TIMEOUT=0.3)
    directory = tmp_path / "warm"
    directory.mkdir()
    started = time.monotonic()
    assert warmup.wait_for_workers(app, directory=str(directory)) is False  # alone: waits, then serves
    assert time.monotonic() - started >= 0.3
    assert (directory / str(os.getpid())).exists()
    # A worker that died (its pid left behind) does not count; a live one does.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (directory / str(dead.pid)).touch()
    assert warmup.wait_for_workers(app, time.monotonic() + 0.2, str(directory)) is False
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (directory / str(sibling.pid)).touch()
        started = time.monotonic()
        assert warmup.wait_for_workers(app, time.monotonic() + 5, str(directory)) is True
        assert time.monotonic() - started < 0.5
    finally:
        sibling.kill()
        sibling.wait()


def test_a_server_answers_only_once_every_worker_is_warm(database_url, make_seeded_app, tmp_path):
    from servers import ProductionServer

    make_seeded_app()  # the 100 codes and the users in the test database
    server = ProductionServer(database_url, tmp_path)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if requests.get(server.base + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.05)
        log = server.log()
        assert log.count("warm-up: probe") == 2, log
        assert "failed" not in log.split("warm-up: probe", 1)[1].splitlines()[0]
    finally:
        server.stop()
