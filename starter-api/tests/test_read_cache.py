"""The read cache: repeated reads answered before Flask, never with outdated data.

On the real PostgreSQL (its notifications keep the cache honest); SQLite runs
without it. Every test checks that a replay happened (``hits``) where it claims one.
"""

import functools
import sys
import threading
import time

import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import create_engine, text
from werkzeug.security import generate_password_hash

from starter import create_app
from starter.config import ConfigError, load
from starter.db import db
from starter.models import split_tag
from starter import readcache
from starter.readcache.versionwatch import APPLICATION_NAME

from helpers import (
    PASSWORD, READER, USERNAME, AuthActions, command_names, new_caller, recorded_sql, redis_limits, redis_round_trips,
)

LIST = "/api/v1.0/pxcodes/"
ITEM = "/api/v1.0/pxcodes/039"
# Made fresh for every answer, replayed or not.
FRESH_HEADERS = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After", "X-Request-ID"}


@pytest.fixture
def database_url(migrated_postgres_url):
    return migrated_postgres_url


@pytest.fixture
def make_cached_app(make_seeded_app):
    def make(**overrides):
        # A long lease: what the tests see within a second came by notification.
        settings = {"READ_CACHE": True, "READ_CACHE_MAX_STALE": 60.0, **overrides}
        return make_seeded_app(**settings)

    return make


@pytest.fixture
def cached_app(make_cached_app):
    return make_cached_app()


@pytest.fixture
def outside(database_url):
    """Run SQL on a connection of its own, as psql or another replica would."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")

    def run(sql, **params):
        with engine.connect() as connection:
            connection.execute(text(sql), params)

    yield run
    engine.dispose()


def cache_of(app):
    return app.extensions[readcache.EXTENSION]


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"not true within {timeout}s")


def watching(app):
    """Wait until the app's watch knows the versions (it starts on the first request)."""
    return wait_until(lambda: cache_of(app).watch.current())


def without_limit_headers(response):
    return sorted((k, v) for k, v in response.headers.items() if k not in FRESH_HEADERS)


@pytest.mark.parametrize("url", [LIST, ITEM, LIST + "?q=hip&sort=-pxcode&per_page=5"])
def test_a_repeated_read_is_replayed_with_the_answer_flask_gave(cached_app, auth, url):
    client = cached_app.test_client()
    first = client.get(url, headers=auth.basic())
    watching(cached_app)
    hits = cache_of(cached_app).hits
    again = client.get(url, headers=auth.basic())
    assert cache_of(cached_app).hits == hits + 1
    assert again.status_code == first.status_code == 200
    assert again.data == first.data
    assert without_limit_headers(again) == without_limit_headers(first)
    # Counted like any request: the per-address budget went down by one more.
    assert int(again.headers["X-RateLimit-Remaining"]) == int(first.headers["X-RateLimit-Remaining"]) - 1


@pytest.mark.parametrize("form", ["{}", "W/{}", '"other", {}', "*"])
def test_a_revalidation_is_replayed_as_flask_answered_it(cached_app, auth, form):
    client = cached_app.test_client()
    tag = client.get(LIST, headers=auth.basic()).headers["ETag"]
    conditional = {**auth.basic(), "If-None-Match": form.format(tag)}
    first = client.get(LIST, headers=conditional)  # Flask's 304, kept
    watching(cached_app)
    hits = cache_of(cached_app).hits
    again = client.get(LIST, headers=conditional)
    assert cache_of(cached_app).hits == hits + 1
    assert again.status_code == first.status_code == 304
    assert again.data == b""
    assert without_limit_headers(again) == without_limit_headers(first)
    # A tag that does not match gets the full page.
    other = client.get(LIST, headers={**auth.basic(), "If-None-Match": '"other"'})
    assert other.status_code == 200 and other.json["meta"]["total"] == 100


def test_head_is_replayed_without_a_body(cached_app, auth):
    client = cached_app.test_client()
    get = client.get(ITEM, headers=auth.basic())
    watching(cached_app)
    hits = cache_of(cached_app).hits
    head = client.head(ITEM, headers=auth.basic())
    assert cache_of(cached_app).hits == hits + 1
    assert head.status_code == 200 and head.data == b""
    assert without_limit_headers(head) == without_limit_headers(get)


def test_a_write_through_the_api_is_read_back_at_once(cached_app, auth):
    client = cached_app.test_client()
    for _ in range(2):
        item = client.get(ITEM, headers=auth.basic())
        client.get(LIST, headers=auth.basic())
    watching(cached_app)
    changed = client.patch(
        ITEM,
        json={"procedure": "CHANGED BY THE API"},
        headers={**auth.basic(), "If-Match": item.headers["ETag"]},
    )
    assert changed.status_code == 200
    # No wait: this process's own write made its cache ask the database.
    assert client.get(ITEM, headers=auth.basic()).json["procedure"] == "CHANGED BY THE API"
    assert client.get(LIST, headers=auth.basic()).json["items"][0]["procedure"] == "CHANGED BY THE API"


def test_a_commit_in_this_process_makes_the_watch_read_again(cached_app, auth):
    cached_app.test_client().get(ITEM, headers=auth.basic())
    watch = cache_of(cached_app).watch
    before = watching(cached_app)
    with cached_app.app_context():
        db.session.execute(text("UPDATE starter_pxcodes SET procedure = 'X' WHERE pxcode = '039'"))
        db.session.commit()
        # Not the version from before the write, not even for a moment (the watch, woken by the
        # commit, may already have read the new one).
        current = watch.current()
        assert current is None or current.codes != before.codes
    assert watching(cached_app).codes != before.codes


def test_a_write_behind_the_service_is_seen_by_notification(cached_app, auth, outside):
    client = cached_app.test_client()
    for _ in range(2):
        client.get(ITEM, headers=auth.basic())
    watching(cached_app)
    hits = cache_of(cached_app).hits
    assert client.get(ITEM, headers=auth.basic()).json["procedure"] != "CHANGED BY PSQL"
    assert cache_of(cached_app).hits == hits + 1
    outside("UPDATE starter_pxcodes SET procedure = 'CHANGED BY PSQL' WHERE pxcode = '039'")
    started = time.monotonic()
    wait_until(
        lambda: client.get(ITEM, headers=auth.basic()).json["procedure"] == "CHANGED BY PSQL",
        timeout=1.0,  # the lease is 60 s: only the notification can explain this
    )
    assert time.monotonic() - started < 1.0
    # ...and the new answer is replayed in its turn.
    client.get(ITEM, headers=auth.basic())
    hits = cache_of(cached_app).hits
    assert client.get(ITEM, headers=auth.basic()).json["procedure"] == "CHANGED BY PSQL"
    assert cache_of(cached_app).hits == hits + 1


def test_a_password_changed_behind_the_service_stops_replays(cached_app, auth, outside):
    client = cached_app.test_client()
    for _ in range(2):
        assert client.get(ITEM, headers=auth.reader()).status_code == 200
    watching(cached_app)
    hits = cache_of(cached_app).hits
    assert client.get(ITEM, headers=auth.reader()).status_code == 200
    assert cache_of(cached_app).hits == hits + 1
    new_hash = generate_password_hash("new password", method="pbkdf2:sha256:1000")
    outside("UPDATE starter_users SET password_hash = :h WHERE username = :u", h=new_hash, u=READER)
    wait_until(lambda: client.get(ITEM, headers=auth.reader()).status_code == 401, timeout=1.0)
    assert client.get(ITEM, headers=auth.basic(READER, "new password")).status_code == 200


def test_wrong_or_unknown_credentials_are_never_replayed(cached_app, auth):
    client = cached_app.test_client()
    for _ in range(2):
        client.get(LIST, headers=auth.basic())
    watching(cached_app)
    hits = cache_of(cached_app).hits
    for headers in (auth.basic(USERNAME, "wrong"), auth.basic("mallory", PASSWORD), {}):
        response = client.get(LIST, headers=headers)
        assert response.status_code == 401
        assert response.json["status"] == 401
    assert cache_of(cached_app).hits == hits


@pytest.mark.parametrize("form", ["bearer", "username"])
def test_a_token_is_replayed_once_verified_and_never_once_tampered(cached_app, auth, form):
    client = cached_app.test_client()
    token = auth.token()

    def headers(token):
        return auth.bearer(token) if form == "bearer" else auth.basic(token, "")

    first = client.get(LIST, headers=headers(token))
    watching(cached_app)
    hits = cache_of(cached_app).hits
    again = client.get(LIST, headers=headers(token))
    assert cache_of(cached_app).hits == hits + 1
    assert again.data == first.data and again.json["meta"]["total"] == 100
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert client.get(LIST, headers=headers(tampered)).status_code == 401
    assert cache_of(cached_app).hits == hits + 1


def test_an_expired_token_is_not_replayed(make_cached_app, auth, monkeypatch):
    app = make_cached_app(TOKEN_EXPIRATION=60)
    client = app.test_client()
    token = AuthActions(client).token()
    for _ in range(2):
        assert client.get(LIST, headers=auth.bearer(token)).status_code == 200
    watching(app)
    later = int(time.time()) + 120  # two minutes on: the token is past its 60 s
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
    assert client.get(LIST, headers=auth.bearer(token)).status_code == 401


def test_replays_count_against_the_per_user_limit(make_cached_app, auth):
    app = make_cached_app(RATELIMIT_PER_USER="3 per minute")
    client = app.test_client()
    assert client.get(ITEM, headers=auth.reader()).status_code == 200
    watching(app)
    hits = cache_of(app).hits
    assert [client.get(ITEM, headers=auth.reader()).status_code for _ in range(2)] == [200, 200]
    assert cache_of(app).hits == hits + 2
    refused = client.get(ITEM, headers=auth.reader())
    assert refused.status_code == 429
    assert refused.json["status"] == 429
    # Another user has a budget of their own.
    assert client.get(ITEM, headers=auth.basic()).status_code == 200


def test_a_replay_with_counters_in_redis_is_one_round_trip(make_cached_app, auth):
    """Issue 12: both limits and the headers' values in one call to Redis (it was four), one hit at
    a time (RATELIMIT_BATCH=1; batched, test_a_batched_replay_mostly_makes_no_round_trip)."""
    app = make_cached_app(**redis_limits(RATELIMIT_BATCH=1))
    client = app.test_client()
    _, plain = new_caller(app, client)
    first = client.get(ITEM, headers=plain)
    conditional = {**plain, "If-None-Match": first.headers["ETag"]}
    assert client.get(ITEM, headers=conditional).status_code == 304  # Flask's, kept
    watching(app)
    for headers, status in ((plain, 200), (conditional, 304)):
        hits = cache_of(app).hits
        with redis_round_trips() as sent:
            again = client.get(ITEM, headers=headers)
        assert cache_of(app).hits == hits + 1
        assert again.status_code == status
        assert len(sent) == 1, command_names(sent)
    assert int(again.headers["X-RateLimit-Remaining"]) == int(first.headers["X-RateLimit-Remaining"]) - 3


def test_a_batched_replay_mostly_makes_no_round_trip(make_cached_app, auth):
    """Issue 12: with RATELIMIT_BATCH, a replay takes its hits from the worker's batches: 40 replays,
    both limits counted, in 2 calls to Redis (one per batch of 32 each), and the headers count down."""
    limits = {"RATELIMIT_PER_USER": "100000 per hour", "RATELIMIT_PER_ADDRESS": "200000 per hour"}
    app = make_cached_app(**redis_limits(RATELIMIT_BATCH=32, **limits))
    client = app.test_client()
    _, headers = new_caller(app, client)
    first = client.get(ITEM, headers=headers)  # Flask's: the first batch of each bucket
    watching(app)
    hits = cache_of(app).hits
    with redis_round_trips() as sent:
        replays = [client.get(ITEM, headers=headers) for _ in range(80)]  # hits 2 to 81
    assert cache_of(app).hits == hits + 80
    assert len(sent) == 2, command_names(sent)  # at hits 33 and 65; one hit at a time: 80
    remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in [first, *replays]]
    assert remaining == list(range(200000 - 1, 200000 - 82, -1))


def test_replays_and_flask_in_two_apps_share_one_budget_in_redis(make_cached_app, auth):
    """Two workers (or replicas) on one Redis: Flask's counts and the replays' are the same buckets."""
    settings = redis_limits(RATELIMIT_PER_USER="5 per minute")
    first, second = make_cached_app(**settings), make_cached_app(**settings)
    one, other = first.test_client(), second.test_client()
    _, headers = new_caller(first, one, other)  # one database: the user is the second app's too
    statuses = [one.get(ITEM, headers=headers).status_code]  # Flask
    watching(first)
    statuses.append(one.get(ITEM, headers=headers).status_code)  # replay
    statuses.append(other.get(ITEM, headers=headers).status_code)  # Flask
    watching(second)
    statuses.append(other.get(ITEM, headers=headers).status_code)  # replay
    statuses.append(one.get(ITEM, headers=headers).status_code)  # replay
    assert (cache_of(first).hits, cache_of(second).hits) == (2, 1)
    refused = other.get(ITEM, headers=headers)
    assert statuses == [200] * 5 and refused.status_code == 429
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert one.get(ITEM, headers=auth.basic()).status_code == 200  # another user, a budget of its own


def test_a_replayed_200_has_no_retry_after(cached_app, auth):
    client = cached_app.test_client()
    first = client.get("/api/v1.0/pxcodes/039", headers=auth.basic())
    watching(cached_app)
    hits = cache_of(cached_app).hits
    again = client.get("/api/v1.0/pxcodes/039", headers=auth.basic())
    assert cache_of(cached_app).hits == hits + 1
    assert first.status_code == again.status_code == 200
    assert "Retry-After" not in first.headers and "Retry-After" not in again.headers


def test_replays_share_the_per_address_budget_and_its_headers(make_cached_app, auth):
    app = make_cached_app(RATELIMIT_PER_ADDRESS="4 per minute")
    client = app.test_client()
    first = client.get(ITEM, headers=auth.reader())
    watching(app)
    rest = [client.get(ITEM, headers=auth.reader()) for _ in range(4)]
    remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in [first, *rest[:3]]]
    assert remaining == [3, 2, 1, 0]
    assert {r.headers["X-RateLimit-Limit"] for r in [first, *rest[:3]]} == {"4"}
    assert rest[3].status_code == 429


def test_an_address_out_of_failed_logins_replays_only_credentials_verified_recently(make_cached_app, auth):
    """Changed by issue 9 item 6 (was: an address out of failed logins gets no replay): the
    guesser's address is held for new credentials, not for a user the app has just proved."""
    app = make_cached_app(RATELIMIT_FAILED_LOGINS_PER_ADDRESS="2 per minute")
    client = app.test_client()
    client.get(LIST, headers=auth.basic())
    watching(app)
    for name in ("mallory", "trudy"):
        assert client.get(LIST, headers=auth.basic(name, "guess")).status_code == 401
    hits = cache_of(app).hits
    assert client.get(LIST, headers=auth.basic()).status_code == 200
    assert cache_of(app).hits == hits + 1
    refused = client.get(LIST, headers=auth.reader())  # never verified: a guess like any other
    assert refused.status_code == 429 and refused.json["status"] == 429
    assert cache_of(app).hits == hits + 1


def test_one_table_of_credential_forms_at_a_cached_and_an_uncached_url(cached_app, auth):
    """Issue 9 item 3: the answer to a credential form does not depend on the cache's state."""
    from test_auth import _forms

    client = cached_app.test_client()
    token = auth.token()
    for headers in (auth.basic(), auth.bearer(token), auth.basic(token, "")):
        for _ in range(2):
            assert client.get(LIST, headers=headers).status_code == 200
    watching(cached_app)
    for number, (header, expected) in enumerate(_forms(token), start=1):
        hits = cache_of(cached_app).hits
        cached = client.get(LIST, headers={"Authorization": header})
        replayed = cache_of(cached_app).hits - hits
        uncached = client.get(f"{LIST}?per_page={number}", headers={"Authorization": header})
        assert (cached.status_code, uncached.status_code) == (expected, expected), header
        assert replayed == (1 if expected == 200 else 0), header


def test_a_host_that_is_not_trusted_is_never_replayed(make_cached_app, auth):
    app = make_cached_app(TRUSTED_HOSTS=["api.example.org"])
    client = app.test_client()
    for _ in range(2):
        assert client.get(ITEM, headers=auth.basic(), base_url="http://api.example.org").status_code == 200
    watching(app)
    hits = cache_of(app).hits
    for host in ("evil.example", "api.example.org.evil.example", "localhost"):
        for _ in range(2):
            response = client.get(ITEM, headers=auth.basic(), base_url=f"http://{host}")
            assert response.status_code == 400 and response.json["status"] == 400, host
    assert cache_of(app).hits == hits
    assert client.get(ITEM, headers=auth.basic(), base_url="http://api.example.org").status_code == 200
    assert cache_of(app).hits == hits + 1


def test_cors_requests_are_answered_by_the_app(make_cached_app, auth):
    app = make_cached_app(CORS_ORIGINS=["https://app.example"])
    client = app.test_client()
    client.get(LIST, headers=auth.basic())
    watching(app)
    hits = cache_of(app).hits
    response = client.get(LIST, headers={**auth.basic(), "Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert cache_of(app).hits == hits


def test_each_host_gets_its_own_links(cached_app, auth):
    client = cached_app.test_client()
    for host in ("a.example", "b.example", "a.example", "b.example"):
        body = client.get(ITEM, headers=auth.basic(), base_url=f"http://{host}").json
        assert body["url"] == f"http://{host}/api/v1.0/pxcodes/039"
        watching(cached_app)
    assert cache_of(cached_app).hits >= 1


def test_the_watch_reconnects_and_misses_nothing_when_its_connection_dies(cached_app, auth, outside):
    client = cached_app.test_client()
    client.get(ITEM, headers=auth.basic())
    watching(cached_app)
    outside(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = :name AND datname = current_database()",
        name=APPLICATION_NAME,
    )
    outside("UPDATE starter_pxcodes SET procedure = 'CHANGED WHILE DOWN' WHERE pxcode = '039'")
    # Until the watch notices the lost connection (milliseconds; the lease here is 60 s),
    # it may still replay; then the app answers, and once it has re-read, replays resume.
    wait_until(
        lambda: client.get(ITEM, headers=auth.basic()).json["procedure"] == "CHANGED WHILE DOWN",
        timeout=1.0,
    )
    watching(cached_app)
    client.get(ITEM, headers=auth.basic())
    hits = cache_of(cached_app).hits
    assert client.get(ITEM, headers=auth.basic()).json["procedure"] == "CHANGED WHILE DOWN"
    assert cache_of(cached_app).hits == hits + 1


def test_versions_not_confirmed_within_the_lease_are_not_used(make_cached_app, auth, database_url):
    app = make_cached_app(READ_CACHE_MAX_STALE=0.4)
    app.test_client().get(ITEM, headers=auth.basic())
    watch = cache_of(app).watch
    watching(app)
    engine = create_engine(database_url)
    try:
        with engine.connect() as locker:
            # The watch's next read waits behind this lock: the database "stopped answering".
            locker.execute(text("LOCK TABLE starter_data_version IN ACCESS EXCLUSIVE MODE"))
            assert watch.current() is not None
            wait_until(lambda: watch.current() is None, timeout=2.0)
            locker.rollback()
        watching(app)  # confirmed again once the database answers
    finally:
        engine.dispose()


def test_without_postgresql_or_when_disabled_there_is_no_read_cache(tmp_path, database_url):
    sqlite = create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.sqlite", "READ_CACHE": True}
    )
    disabled = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "READ_CACHE": False})
    assert readcache.EXTENSION not in sqlite.extensions
    assert readcache.EXTENSION not in disabled.extensions


@pytest.mark.parametrize(
    "setting", [{"READ_CACHE_MAX_STALE": 0}, {"READ_CACHE_ENTRIES": 0}, {"READ_CACHE_BYTES": 0}]
)
def test_a_read_cache_that_cannot_work_is_refused_at_start(database_url, setting):
    with pytest.raises(ConfigError, match="READ_CACHE"):
        create_app({"SQLALCHEMY_DATABASE_URI": database_url, "READ_CACHE": True, **setting})


def test_a_lease_that_is_not_a_number_is_a_config_error(monkeypatch):
    monkeypatch.setenv("READ_CACHE_MAX_STALE", "soon")
    with pytest.raises(ConfigError, match="READ_CACHE_MAX_STALE must be a number"):
        load("production")


def test_createdb_under_a_running_service_is_noticed_at_once(cached_app, auth):
    client = cached_app.test_client()
    for _ in range(2):
        assert client.get(LIST, headers=auth.basic()).json["meta"]["total"] == 100
    watching(cached_app)
    hits = cache_of(cached_app).hits
    assert client.get(LIST, headers=auth.basic()).status_code == 200
    assert cache_of(cached_app).hits == hits + 1
    assert cached_app.test_cli_runner().invoke(args=["createdb"]).exit_code == 0
    # The users are gone with the codes: no replay may let the old credentials in.
    wait_until(lambda: client.get(LIST, headers=auth.basic()).status_code == 401, timeout=1.0)


def test_replayed_credentials_are_verified_again_before_they_expire(make_cached_app, auth, password_checks):
    app = make_cached_app(AUTH_CACHE_SECONDS=1)
    client = app.test_client()
    checked_at = password_checks
    client.get(ITEM, headers=auth.basic())
    watching(app)
    started, requests = time.monotonic(), 0
    while time.monotonic() - started < 1.6:
        assert client.get(ITEM, headers=auth.basic()).status_code == 200
        requests += 1
        time.sleep(0.01)
    # One request went to the app to re-check them past half their second; the rest were replays.
    assert 0.5 <= checked_at[1] - checked_at[0] < 0.9
    assert cache_of(app).hits >= requests - len(checked_at) - 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic"},
        {"Authorization": "Basic //46AA=="},  # not UTF-8, a NUL for a password
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not.a.token"},
        {"Authorization": "Digest username=alice"},
        {"Authorization": "\x00\x01"},
    ],
)
def test_hostile_credentials_at_a_cached_url_get_401_json(cached_app, auth, headers):
    client = cached_app.test_client()
    for _ in range(2):
        client.get(LIST, headers=auth.basic())
    watching(cached_app)
    hits = cache_of(cached_app).hits
    response = client.get(LIST, headers=headers)
    assert response.status_code == 401
    assert response.json["status"] == 401
    assert cache_of(cached_app).hits == hits


@pytest.mark.parametrize("tag", ['"unterminated', "W/", ",,,", "\x00", '"' + "x" * 5000 + '"'])
def test_hostile_if_none_match_at_a_cached_url_gets_the_page(cached_app, auth, tag):
    client = cached_app.test_client()
    for _ in range(2):
        client.get(LIST, headers=auth.basic())
    watching(cached_app)
    response = client.get(LIST, headers={**auth.basic(), "If-None-Match": tag})
    assert response.status_code == 200
    assert response.json["meta"]["total"] == 100


# --- answers made of one code: writes to other codes leave them current (the change log) ---

OTHER = "/api/v1.0/pxcodes/057"


def replayed(app, client, url, headers):
    """Request ``url``; return (response, whether the read cache answered it)."""
    hits = cache_of(app).hits
    response = client.get(url, headers=headers)
    return response, cache_of(app).hits == hits + 1


def moved_on(app, before):
    """Wait until the watch knows a codes' version other than ``before``'s."""
    return wait_until(lambda: (cache_of(app).watch.current() or before).codes != before.codes, timeout=1.0)


def test_a_write_to_another_code_leaves_an_item_replayed(cached_app, auth, outside):
    client = cached_app.test_client()
    for _ in range(2):
        first = client.get(ITEM, headers=auth.basic())
        client.get(OTHER, headers=auth.basic())
        client.get(LIST, headers=auth.basic())
    before = watching(cached_app)
    outside("UPDATE starter_pxcodes SET procedure = 'CHANGED BY PSQL' WHERE pxcode = '057'")
    # The changed item answers its new content as soon as the notification is in...
    wait_until(lambda: client.get(OTHER, headers=auth.basic()).json["procedure"] == "CHANGED BY PSQL", 1.0)
    moved_on(cached_app, before)
    # ...the other is still replayed, made at the version before, byte for byte...
    again, was_replayed = replayed(cached_app, client, ITEM, auth.basic())
    assert was_replayed and again.data == first.data
    assert again.headers["ETag"] == first.headers["ETag"]
    # ...and so is its revalidation; the list depends on every code: Flask answers it.
    tag = {**auth.basic(), "If-None-Match": first.headers["ETag"]}
    client.get(ITEM, headers=tag)
    not_modified, was_replayed = replayed(cached_app, client, ITEM, tag)
    assert not_modified.status_code == 304 and was_replayed
    listed, was_replayed = replayed(cached_app, client, LIST, auth.basic())
    assert not was_replayed
    assert next(i for i in listed.json["items"] if i["pxcode"] == "057")["procedure"] == "CHANGED BY PSQL"


def test_this_process_s_own_write_flushes_only_what_it_changed(cached_app, auth):
    client = cached_app.test_client()
    for _ in range(2):
        first = client.get(ITEM, headers=auth.basic())
        other = client.get(OTHER, headers=auth.basic())
    before = watching(cached_app)
    changed = client.patch(
        OTHER, json={"procedure": "CHANGED BY THE API"},
        headers={**auth.basic(), "If-Match": other.headers["ETag"]},
    )
    assert changed.status_code == 200
    # At once, without waiting for the watch.
    assert client.get(OTHER, headers=auth.basic()).json["procedure"] == "CHANGED BY THE API"
    moved_on(cached_app, before)
    again, was_replayed = replayed(cached_app, client, ITEM, auth.basic())
    assert was_replayed and again.data == first.data


@pytest.mark.parametrize(
    "sql, status",
    [
        # A version bumped by hand: no log row, so anything may have changed.
        ("UPDATE starter_data_version SET version = version + 1 WHERE id = 1", 200),
        # The item's own code renamed away (psql may): the old code is gone.
        ("UPDATE starter_pxcodes SET pxcode = '999' WHERE pxcode = '039'", 404),
    ],
)
def test_a_change_the_log_cannot_rule_out_flushes_the_item(cached_app, auth, outside, sql, status):
    client = cached_app.test_client()
    for _ in range(2):
        client.get(ITEM, headers=auth.basic())
    before = watching(cached_app)
    assert replayed(cached_app, client, ITEM, auth.basic())[1]
    outside(sql)
    moved_on(cached_app, before)
    response, was_replayed = replayed(cached_app, client, ITEM, auth.basic())
    assert not was_replayed and response.status_code == status


def test_the_history_flushes_everything_it_cannot_tell(database_url):
    from starter.readcache.versionwatch import History, VersionWatch

    watch = VersionWatch(database_url, {}, 60.0)
    try:
        assert not watch.unchanged("039", "e.1", "e.1")  # no history yet
        history = watch._history = History("e", 5)
        history.changed_at["057"] = 7
        history.upto = 8
        assert watch.unchanged("039", "e.5", "e.8") and watch.unchanged("057", "e.7", "e.8")
        assert not watch.unchanged("057", "e.6", "e.8")  # changed after it was made
        assert not watch.unchanged("039", "e.4", "e.8")  # made before the history began
        assert not watch.unchanged("039", "e.5", "e.9")  # past what the history knows
        assert not watch.unchanged("039", "other.5", "e.8")  # another epoch
        assert not watch.unchanged("039", "e.8", "e.6")  # made after the version asked about
    finally:
        watch.stop()


# --- memory: the kept answers are bounded in bytes ---


def test_the_kept_answers_stay_within_read_cache_bytes(make_cached_app, auth):
    bound = 32 * 1024
    app = make_cached_app(READ_CACHE_BYTES=bound, READ_CACHE_ENTRIES=10_000)
    client = app.test_client()
    pages = [f"{LIST}?per_page=100"] + [f"{LIST}?per_page=100&q={word}" for word in ("hip", "heart", "w")]
    items = [f"/api/v1.0/pxcodes/{code}" for code in ("039", "057", "064", "065", "066", "069", "074")]
    for url in (pages + items) * 3:
        assert client.get(url, headers=auth.basic()).status_code == 200
        answers, held = cache_of(app).kept()
        assert 0 < held <= bound
    assert answers < len(pages + items)  # something had to go
    # The most recent answers are the ones kept.
    watching(app)
    assert replayed(app, client, items[-1], auth.basic())[1]


def test_an_answer_larger_than_the_whole_cache_is_not_kept(make_cached_app, auth):
    app = make_cached_app(READ_CACHE_BYTES=4096)
    client = app.test_client()
    for _ in range(2):
        assert client.get(f"{LIST}?per_page=100", headers=auth.basic()).status_code == 200
        client.get(ITEM, headers=auth.basic())
    watching(app)
    assert not replayed(app, client, f"{LIST}?per_page=100", auth.basic())[1]
    assert replayed(app, client, ITEM, auth.basic())[1]


def deep_size(value, seen):
    """Bytes of ``value`` and everything it holds (each object once)."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, (list, tuple)):
        size += sum(deep_size(item, seen) for item in value)
    elif hasattr(value, "__dict__"):
        size += deep_size(vars(value), seen)
    if isinstance(value, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in value.items())
    return size


def test_what_the_kept_answers_hold_is_within_their_counted_size(cached_app, auth):
    client = cached_app.test_client()
    codes = [item["pxcode"] for item in client.get(f"{LIST}?per_page=100", headers=auth.basic()).json["items"]]
    for code in codes:
        client.get(f"/api/v1.0/pxcodes/{code}", headers=auth.basic())
    for page in range(1, 6):
        client.get(f"{LIST}?per_page=20&page={page}", headers=auth.basic())
    kept = cache_of(cached_app)._kept
    answers, held = cache_of(cached_app).kept()
    assert answers == len(codes) + 6
    # The cache's own tables (dicts and links, cachetools' internals) and every key and answer.
    seen = set()
    actual = sum(deep_size(value, seen) for value in vars(kept).values() if isinstance(value, dict))
    assert actual <= held


# --- filtered listings: they depend on the codes their filter selects, before or after ---

BY_CODE = f"{LIST}?code=0"  # 039, 057, 064, 065, 066, 069, 074
BY_WORD = f"{LIST}?q=heart"  # 291, 292, 293, ...


@pytest.mark.parametrize(
    "pxcode, title, flushed",
    [
        ("149", "DIZZINESS", set()),  # selected by neither, before or after
        ("069", "TRANSIENT ISCHEMIA, CHANGED", {BY_CODE}),  # a code the prefix selects
        ("101", "HEART SEIZURES", {BY_WORD}),  # selected once changed
        ("291", "FAILURE & SHOCK W MCC", {BY_WORD}),  # selected before the change
    ],
)
def test_a_filtered_listing_is_flushed_only_by_a_change_of_a_row_it_selects(
    cached_app, auth, outside, pxcode, title, flushed
):
    client = cached_app.test_client()
    for _ in range(2):
        first = {url: client.get(url, headers=auth.basic()) for url in (BY_CODE, BY_WORD, ITEM)}
    before = watching(cached_app)
    assert all(replayed(cached_app, client, url, auth.basic())[1] for url in first)
    outside("UPDATE starter_pxcodes SET procedure = :t WHERE pxcode = :c", t=title, c=pxcode)
    moved_on(cached_app, before)
    for url in (BY_CODE, BY_WORD):
        response, was_replayed = replayed(cached_app, client, url, auth.basic())
        assert was_replayed == (url not in flushed), url
        assert (response.data == first[url].data) == (url not in flushed), url
    # An unfiltered listing depends on every code: never replayed across a write.
    assert not replayed(cached_app, client, LIST, auth.basic())[1]


def test_a_corrected_search_depends_on_every_code(cached_app, auth, outside):
    client = cached_app.test_client()
    url = f"{LIST}?q=hert"
    for _ in range(2):
        assert client.get(url, headers=auth.basic()).json["meta"]["fuzzy"] is True
    before = watching(cached_app)
    assert replayed(cached_app, client, url, auth.basic())[1]
    outside("UPDATE starter_pxcodes SET procedure = 'DIZZINESS' WHERE pxcode = '149'")
    moved_on(cached_app, before)
    assert not replayed(cached_app, client, url, auth.basic())[1]


def test_a_created_code_the_filter_selects_flushes_it(cached_app, auth, outside):
    client = cached_app.test_client()
    for _ in range(2):
        total = client.get(BY_WORD, headers=auth.basic()).json["meta"]["total"]
    before = watching(cached_app)
    outside("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('L1', 'LOAD TEST HEART')")
    moved_on(cached_app, before)
    response, was_replayed = replayed(cached_app, client, BY_WORD, auth.basic())
    assert not was_replayed and response.json["meta"]["total"] == total + 1


def test_a_page_from_the_render_cache_keeps_what_it_depends_on(cached_app, auth, outside):
    client = cached_app.test_client()
    client.get(BY_CODE, headers=auth.basic())  # rendered
    cache_of(cached_app).clear()
    first = client.get(BY_CODE, headers=auth.basic())  # from the rendered pages: no render
    before = watching(cached_app)
    assert replayed(cached_app, client, BY_CODE, auth.basic())[1]
    outside("UPDATE starter_pxcodes SET procedure = 'DIZZINESS' WHERE pxcode = '149'")
    moved_on(cached_app, before)
    again, was_replayed = replayed(cached_app, client, BY_CODE, auth.basic())
    assert was_replayed and again.data == first.data


def look_ups_of(app, client, url, headers):
    """Request ``url`` (through Flask: a URL not asked before); return (response, how many
    look-ups of search words it sent, ``search.look_up``'s statement)."""
    with recorded_sql(app) as statements:
        response = client.get(url, headers=headers)
    return response, sum("string_agg" in s for s in statements)


@pytest.mark.parametrize(
    "sql, looked_up_again",
    [
        ("UPDATE starter_pxcodes SET procedure = 'DIZZINESS' WHERE pxcode = '149'", False),  # no heart word
        ("UPDATE starter_pxcodes SET procedure = 'HEART TEST' WHERE pxcode = '149'", False),  # a word titles had
        ("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('L1', 'HEARTWORM TEST')", True),  # a word no title had
        ("DELETE FROM starter_pxcodes WHERE pxcode = '291'", True),  # a heart word lost: maybe its last
        ("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('HEART1', 'DIZZINESS')", True),  # a code the word starts
    ],
)
def test_a_search_word_is_looked_up_again_only_after_a_change_that_may_alter_it(
    cached_app, auth, outside, sql, looked_up_again
):
    """``search.KnownWords``: what the database holds of a word serves later versions that left
    it as it was, as the read cache's history tells."""
    client = cached_app.test_client()
    client.get(ITEM, headers=auth.basic())  # credentials known
    before = watching(cached_app)
    first, looked_up = look_ups_of(cached_app, client, f"{LIST}?q=heart&per_page=5", auth.basic())
    assert looked_up == 1
    outside(sql)
    moved_on(cached_app, before)
    again, looked_up = look_ups_of(cached_app, client, f"{LIST}?q=heart&per_page=6", auth.basic())
    assert looked_up == int(looked_up_again)
    found = {item["pxcode"] for item in again.json["items"]}
    assert ("L1" in found) == ("L1" in sql) and ("HEART1" in found) == ("HEART1" in sql)


def test_a_word_whose_last_title_word_went_is_corrected_as_a_fresh_look_up_would(cached_app, auth, outside):
    client = cached_app.test_client()
    outside("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('L1', 'HEARTWORM TEST')")
    client.get(ITEM, headers=auth.basic())
    before = watching(cached_app)
    first, _ = look_ups_of(cached_app, client, f"{LIST}?q=heartw&per_page=5", auth.basic())
    assert [item["pxcode"] for item in first.json["items"]] == ["L1"]
    outside("DELETE FROM starter_pxcodes WHERE pxcode = 'L1'")
    moved_on(cached_app, before)
    again, looked_up = look_ups_of(cached_app, client, f"{LIST}?q=heartw&per_page=6", auth.basic())
    assert looked_up >= 1
    # "heartw" starts no title word now: corrected to the nearest one, as on a fresh server.
    assert again.json["meta"]["fuzzy"] is True and again.json["items"]


def holding_the_watch(cached_app, monkeypatch):
    """Hold the version watch's thread before it can learn of the next write, until the returned
    event is set (at most 5 s): the worker then knows only of its own writes."""
    watching(cached_app)
    watch = cache_of(cached_app).watch
    held, real = threading.Event(), watch._follow_changes
    monkeypatch.setattr(watch, "_follow_changes", lambda *a: (held.wait(5), real(*a)))
    return held


def test_until_the_watch_has_read_its_write_a_worker_replays_what_it_did_not_write(cached_app, auth, monkeypatch):
    client = cached_app.test_client()
    for _ in range(2):
        first = client.get(ITEM, headers=auth.basic())
        other = client.get(OTHER, headers=auth.basic())
        client.get(LIST, headers=auth.basic())
    held = holding_the_watch(cached_app, monkeypatch)
    try:
        changed = client.patch(
            OTHER, json={"procedure": "CHANGED BY THE API"},
            headers={**auth.basic(), "If-Match": other.headers["ETag"]},
        )
        assert changed.status_code == 200
        assert replayed(cached_app, client, OTHER, auth.basic())[0].json["procedure"] == "CHANGED BY THE API"
        assert not replayed(cached_app, client, LIST, auth.basic())[1]
        again, was_replayed = replayed(cached_app, client, ITEM, auth.basic())
        assert was_replayed and again.data == first.data
        # A write that declares nothing (raw SQL here) forgets everything, as before.
        with cached_app.app_context():
            db.session.execute(text("UPDATE starter_pxcodes SET procedure = 'X' WHERE pxcode = '064'"))
            db.session.commit()
        assert not replayed(cached_app, client, ITEM, auth.basic())[1]
    finally:
        held.set()


def test_a_notification_heard_while_the_watch_reads_is_not_left_waiting(cached_app, auth, outside, monkeypatch):
    client = cached_app.test_client()
    client.get(ITEM, headers=auth.basic())
    watching(cached_app)
    watch = cache_of(cached_app).watch
    armed, real = [True], watch._follow_changes

    def follow(cursor, epoch, number):
        if armed:
            armed.clear()
            # A second write commits while the watch reads the first: its notification is on the
            # socket before the watch's next query, which takes it off.
            outside("UPDATE starter_pxcodes SET procedure = 'SECOND WRITE' WHERE pxcode = '039'")
            time.sleep(0.05)
        return real(cursor, epoch, number)

    monkeypatch.setattr(watch, "_follow_changes", follow)
    outside("UPDATE starter_pxcodes SET procedure = 'FIRST WRITE' WHERE pxcode = '057'")
    # The heartbeat is 15 s here (a 60 s lease): only reading again at once explains this.
    wait_until(lambda: client.get(ITEM, headers=auth.basic()).json["procedure"] == "SECOND WRITE", timeout=1.0)
    assert not armed
    # And the watch knows the second version: the item is replayed again.
    client.get(ITEM, headers=auth.basic())
    assert replayed(cached_app, client, ITEM, auth.basic())[1]


def test_a_server_that_has_only_seen_revalidations_replays_them(cached_app, auth, outside):
    """A client that only ever revalidates (its 200 came from another worker) gets replays."""
    client = cached_app.test_client()
    tag = client.get(LIST, headers=auth.basic()).headers["ETag"]
    cache_of(cached_app).clear()  # as a worker that never answered the full page
    conditional = {**auth.basic(), "If-None-Match": tag}
    first = client.get(LIST, headers=conditional)  # Flask's 304, kept alone
    watching(cached_app)
    hits = cache_of(cached_app).hits
    again = client.get(LIST, headers=conditional)
    assert cache_of(cached_app).hits == hits + 1
    assert again.status_code == first.status_code == 304
    assert without_limit_headers(again) == without_limit_headers(first)
    # Another tag: not this 304 (Flask answers the full page).
    other = client.get(LIST, headers={**auth.basic(), "If-None-Match": '"other"'})
    assert cache_of(cached_app).hits == hits + 1
    assert other.status_code == 200
    # After a change the kept 304 is stale: the old tag gets the new page.
    cache_of(cached_app).clear()
    client.get(LIST, headers=conditional)
    outside("UPDATE starter_pxcodes SET procedure = 'CHANGED BY PSQL' WHERE pxcode = '039'")
    changed = wait_until(lambda: (r := client.get(LIST, headers=conditional)).status_code == 200 and r)
    assert changed.headers["ETag"] != tag


def test_identical_first_requests_wait_for_the_one_flask_answers(cached_app, auth):
    """A burst of the same request (clients' first, on a cold worker): Flask answers it once."""
    client = cached_app.test_client()
    client.get(LIST, headers=auth.basic())  # the credentials verified, the watch started
    watching(cached_app)
    view = cached_app.view_functions["api.get_pxcode"]
    calls = []

    # The view's own name: flask-limiter (one object for every app of the process) knows a view's
    # limits by it and remembers them; another name would leave the next tests' apps unlimited.
    @functools.wraps(view)
    def slow_view(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)  # every other request arrives while this one is in Flask
        return view(*args, **kwargs)

    cached_app.view_functions["api.get_pxcode"] = slow_view
    start = threading.Barrier(8)
    answers = []

    def read():
        start.wait()
        response = cached_app.test_client().get(ITEM, headers=auth.basic())
        answers.append((response.status_code, response.data))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(answers) == 8 and {status for status, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
    assert len(calls) == 1, f"Flask answered {len(calls)} of 8 identical requests"


def test_a_request_waiting_for_an_identical_one_gives_its_turn_back(make_cached_app, auth):
    """Two turns (SERVER_THREADS): one request in Flask, an identical one waiting for its answer,
    and a third, other request is still answered meanwhile."""
    app = make_cached_app(SERVER_THREADS=2)
    client = app.test_client()
    client.get(LIST, headers=auth.basic())
    watching(app)
    view, calls, go = app.view_functions["api.get_pxcode"], [], threading.Event()

    @functools.wraps(view)  # the view's own name: see the test above
    def held_view(*args, **kwargs):
        calls.append(1)
        go.wait(5)
        return view(*args, **kwargs)

    app.view_functions["api.get_pxcode"] = held_view
    answers = []
    readers = [
        threading.Thread(target=lambda: answers.append(app.test_client().get(ITEM, headers=auth.basic())))
        for _ in range(2)
    ]
    try:
        readers[0].start()
        wait_until(lambda: calls)
        readers[1].start()
        time.sleep(0.1)  # it joins the first one's flight
        assert client.get(LIST + "?per_page=7", headers=auth.basic()).status_code == 200
        assert not go.is_set() and not answers
    finally:
        go.set()
        for reader in readers:
            reader.join(10)
    assert [response.status_code for response in answers] == [200, 200] and len(calls) == 1


PAGE_1 = f"{LIST}?per_page=5"  # 039, 057, 064, 065, 066
BY_TITLE = f"{LIST}?sort=procedure&per_page=5"  # ACUTE MYOCARDIAL... (281, 280, 282), ALCOHOL... 897, ATHEROSCLEROSIS 303
BY_CODE_DOWN = f"{LIST}?sort=-pxcode&per_page=5"


def as_flask_answers(app, client, url, headers):
    """What Flask answers ``url`` now, the read cache emptied first (no replay)."""
    cache_of(app).clear()
    response, was_replayed = replayed(app, client, url, headers)
    assert not was_replayed
    return response


def kept_with_their_304s(client, auth, urls):
    """Each URL's answer (the second round's), its 200 and its 304 kept by the read cache."""
    for _ in range(2):
        first = {url: client.get(url, headers=auth.basic()) for url in urls}
        for url in urls:
            assert client.get(url, headers={**auth.basic(), "If-None-Match": first[url].headers["ETag"]}).status_code == 304
    return first


@pytest.mark.parametrize(
    "sql, kept",
    [
        # A title changed on a code after page 1 (in code order), and one on it; both after
        # the first titles, before and after.
        ("UPDATE starter_pxcodes SET procedure = 'CHANGED' WHERE pxcode = '069'", {PAGE_1, BY_TITLE, BY_CODE_DOWN}),
        ("UPDATE starter_pxcodes SET procedure = 'CHANGED' WHERE pxcode = '057'", {BY_TITLE, BY_CODE_DOWN}),
        # In title order: a title moved from after the page to after it, or to before it.
        ("UPDATE starter_pxcodes SET procedure = 'ZZ SEIZURES' WHERE pxcode = '101'", {PAGE_1, BY_TITLE, BY_CODE_DOWN}),
        ("UPDATE starter_pxcodes SET procedure = 'AAA SEIZURES' WHERE pxcode = '101'", {PAGE_1, BY_CODE_DOWN}),
        # A title on the page's last row changed but staying on it (still before 'B...').
        ("UPDATE starter_pxcodes SET procedure = 'ATHEROSCLEROSIS' WHERE pxcode = '303'", {PAGE_1, BY_CODE_DOWN}),
    ],
)
def test_an_unfiltered_page_is_flushed_only_by_a_change_of_its_rows(cached_app, auth, outside, sql, kept):
    client = cached_app.test_client()
    urls = (PAGE_1, BY_TITLE, BY_CODE_DOWN)
    first = kept_with_their_304s(client, auth, urls)
    before = watching(cached_app)
    assert all(replayed(cached_app, client, url, auth.basic())[1] for url in urls)
    outside(sql)
    moved_on(cached_app, before)
    for url in urls:
        response, was_replayed = replayed(cached_app, client, url, auth.basic())
        assert was_replayed == (url in kept), url
        if url in kept:
            # The answer and its tag as they were; a revalidation still 304, replayed.
            assert response.data == first[url].data and response.headers["ETag"] == first[url].headers["ETag"]
            tag = {**auth.basic(), "If-None-Match": first[url].headers["ETag"]}
            not_modified, was_replayed = replayed(cached_app, client, url, tag)
            assert not_modified.status_code == 304 and was_replayed, url
        else:
            assert response.data != first[url].data, url


@pytest.mark.parametrize(
    "sql, delta, kept",
    [
        # Created or deleted after the page in its order: the same rows, another total.
        ("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('ZZZ', 'ZZ LAST')", 1, {PAGE_1, BY_TITLE}),
        ("DELETE FROM starter_pxcodes WHERE pxcode = '069'", -1, {PAGE_1, BY_TITLE, BY_CODE_DOWN}),
        # Before it: its rows shift.
        ("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('0', 'AAA FIRST')", 1, {BY_CODE_DOWN}),
        ("DELETE FROM starter_pxcodes WHERE pxcode = '057'", -1, {BY_TITLE, BY_CODE_DOWN}),
    ],
)
def test_a_page_before_a_created_or_deleted_code_is_answered_with_the_new_total(
    cached_app, auth, outside, sql, delta, kept
):
    client = cached_app.test_client()
    urls = (PAGE_1, BY_TITLE, BY_CODE_DOWN)
    first = kept_with_their_304s(client, auth, urls)
    before = watching(cached_app)
    outside(sql)
    moved_on(cached_app, before)
    answers = {}
    for url in urls:
        response, was_replayed = replayed(cached_app, client, url, auth.basic())
        assert was_replayed == (url in kept), url
        assert response.json["meta"]["total"] == first[url].json["meta"]["total"] + delta
        assert response.headers["ETag"] != first[url].headers["ETag"]
        assert (response.json["items"] == first[url].json["items"]) == (url in kept), url
        answers[url] = response
    # Byte for byte what Flask answers at that version, its tag too; and its revalidation.
    for url in kept:
        # Revalidated with the new tag: 304, replayed; with the old one, the new page.
        not_modified, was_replayed = replayed(
            cached_app, client, url, {**auth.basic(), "If-None-Match": answers[url].headers["ETag"]}
        )
        assert not_modified.status_code == 304 and was_replayed, url
        assert not_modified.headers["ETag"] == answers[url].headers["ETag"]
        stale = client.get(url, headers={**auth.basic(), "If-None-Match": first[url].headers["ETag"]})
        assert stale.status_code == 200 and stale.data == answers[url].data
    for url in kept:
        flask = as_flask_answers(cached_app, client, url, auth.basic())
        assert flask.data == answers[url].data, url
        assert without_limit_headers(flask) == without_limit_headers(answers[url]), url
        assert client.get(url, headers={**auth.basic(), "If-None-Match": flask.headers["ETag"]}).status_code == 304


def test_a_replayed_page_with_a_new_total_gets_its_next_and_last_links(cached_app, auth, outside):
    client = cached_app.test_client()
    url = f"{LIST}?per_page=50&page=2"  # the last page, full: no next
    for _ in range(2):
        first = client.get(url, headers=auth.basic())
    assert first.json["meta"]["next"] is None and first.json["meta"]["pages"] == 2
    before = watching(cached_app)
    outside("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('ZZZ', 'ZZ LAST')")
    moved_on(cached_app, before)
    # A full last page: the created code after it is on page 3, the rows are the same.
    response, was_replayed = replayed(cached_app, client, url, auth.basic())
    assert was_replayed
    meta = response.json["meta"]
    assert (meta["pages"], meta["total"]) == (3, 101)
    assert meta["next"].endswith("per_page=50&page=3") and meta["last"] == meta["next"]
    assert 'rel="next"' in response.headers["Link"] and response.headers["X-Total-Count"] == "101"
    assert as_flask_answers(cached_app, client, url, auth.basic()).data == response.data


def test_a_page_short_of_full_is_flushed_by_a_code_created_after_it(cached_app, auth, outside):
    client = cached_app.test_client()
    url = f"{LIST}?per_page=30&page=4"  # 10 codes: a new last code joins it
    for _ in range(2):
        client.get(url, headers=auth.basic())
    before = watching(cached_app)
    outside("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('ZZZ', 'ZZ LAST')")
    moved_on(cached_app, before)
    response, was_replayed = replayed(cached_app, client, url, auth.basic())
    assert not was_replayed and response.json["items"][-1]["pxcode"] == "ZZZ"


def test_pages_are_not_kept_across_writes_where_the_database_orders_otherwise(cached_app, auth, outside):
    client = cached_app.test_client()
    for _ in range(2):
        client.get(PAGE_1, headers=auth.basic())
    before = watching(cached_app)
    cache_of(cached_app).watch.byte_order = False  # as with a collation Python does not compare as
    outside("UPDATE starter_pxcodes SET procedure = 'CHANGED' WHERE pxcode = '069'")
    moved_on(cached_app, before)
    assert not replayed(cached_app, client, PAGE_1, auth.basic())[1]


def test_flask_answers_304_to_an_earlier_tag_of_a_page_no_write_changed(cached_app, auth, outside):
    client = cached_app.test_client()
    first = client.get(PAGE_1, headers=auth.basic())
    other = client.get(f"{PAGE_1}&page=2", headers=auth.basic())
    before = watching(cached_app)
    outside("UPDATE starter_pxcodes SET procedure = 'CHANGED' WHERE pxcode = '069'")  # page 2's
    moved_on(cached_app, before)
    cache_of(cached_app).clear()  # no kept answer: Flask answers
    held = {**auth.basic(), "If-None-Match": first.headers["ETag"]}
    response, was_replayed = replayed(cached_app, client, PAGE_1, held)
    assert not was_replayed and response.status_code == 304 and response.headers["ETag"] == first.headers["ETag"]
    again, was_replayed = replayed(cached_app, client, PAGE_1, held)
    assert was_replayed and again.status_code == 304 and again.headers["ETag"] == first.headers["ETag"]
    # Another page's tag is not this one's; a changed page's earlier tag is not current.
    cache_of(cached_app).clear()
    assert client.get(PAGE_1, headers={**auth.basic(), "If-None-Match": other.headers["ETag"]}).status_code == 200
    changed = client.get(f"{PAGE_1}&page=2", headers={**auth.basic(), "If-None-Match": other.headers["ETag"]})
    assert changed.status_code == 200 and "CHANGED" in changed.get_data(as_text=True)


def test_a_304_flask_gave_without_rendering_outlives_a_write_it_does_not_show(cached_app, auth, outside):
    probe = cached_app.test_client().get(PAGE_1, headers=auth.basic())
    cache_of(cached_app).clear()
    from starter.api.pxcodes import page_caches

    page_caches(cached_app)[1].clear()
    cached_app.extensions["starter_pxcode_page_depends"]._depends.clear()  # as a server that never rendered it
    client = cached_app.test_client()
    held = {**auth.basic(), "If-None-Match": probe.headers["ETag"]}
    for _ in range(2):
        assert client.get(PAGE_1, headers=held).status_code == 304
    before = watching(cached_app)
    outside("UPDATE starter_pxcodes SET procedure = 'CHANGED' WHERE pxcode = '069'")
    moved_on(cached_app, before)
    response, was_replayed = replayed(cached_app, client, PAGE_1, held)
    assert was_replayed and response.status_code == 304


@pytest.mark.parametrize(
    "descending, open_end, pxcode, before, after, touched",
    [
        (False, False, "C", "T", "U", True),  # a row of the page
        (False, False, "E", "T", "U", False),  # after it, title changed
        (False, False, "A", None, "T", True),  # created before it: the rows shift
        (False, False, "E", None, "T", False),  # created after it: the total alone
        (False, True, "E", None, "T", True),  # after a page short of full: it joins it
        (True, False, "A", None, "T", False),  # descending: a smaller code comes after the page
        (True, False, "E", "T", None, True),  # descending: a larger one, before it
        (True, True, "A", None, "T", True),  # descending, short of full: it joins it
    ],
)
def test_a_window_is_touched_by_what_changes_its_rows(descending, open_end, pxcode, before, after, touched):
    from starter.changelog import Change
    from starter.readcache.depends import Window

    window = Window(False, descending, ("B",), ("D",), open_end, 10, "http://x/")
    assert window.touched_by(Change(pxcode, before, after)) is touched


@pytest.mark.parametrize(
    "before, after, touched",
    [
        ("A1", "A2", False),  # before the page, still before
        ("A1", "Z", True),  # from before to after: the rows shift
        ("Z", "A1", True),  # and back
        ("Z", "Y", False),  # after, still after
        ("Z", "M", True),  # onto the page
    ],
)
def test_a_title_window_is_touched_by_a_title_moved_across_or_onto_it(before, after, touched):
    from starter.changelog import Change
    from starter.readcache.depends import Window

    window = Window(True, False, ("B", "9"), ("P", "1"), False, 10, "http://x/")
    assert window.touched_by(Change("5", before, after)) is touched


def test_a_worker_replays_the_pages_its_own_write_left_as_they_were_before_the_watch_reads_it(
    cached_app, auth, monkeypatch
):
    client = cached_app.test_client()
    urls = (PAGE_1, BY_TITLE, BY_WORD)
    for _ in range(2):
        first = {url: client.get(url, headers=auth.basic()) for url in urls}
        outside_page = client.get("/api/v1.0/pxcodes/069", headers=auth.basic())
        on_page = client.get("/api/v1.0/pxcodes/057", headers=auth.basic())
    held = holding_the_watch(cached_app, monkeypatch)
    try:
        # A title changed outside the pages (069 is after page 1 in both orders; no HEART).
        changed = client.patch(
            "/api/v1.0/pxcodes/069", json={"procedure": "TRANSIENT ISCHEMIA EDITED"},
            headers={**auth.basic(), "If-Match": outside_page.headers["ETag"]},
        )
        assert changed.status_code == 200
        for url in urls:
            again, was_replayed = replayed(cached_app, client, url, auth.basic())
            assert was_replayed and again.data == first[url].data, url
        # One on page 1 (057): Flask answers page 1 at once, with the new title.
        changed = client.patch(
            "/api/v1.0/pxcodes/057", json={"procedure": "AAA HEART EDITED"},
            headers={**auth.basic(), "If-Match": on_page.headers["ETag"]},
        )
        assert changed.status_code == 200
        for url in urls:  # it moved onto the title page, and into the search
            response, was_replayed = replayed(cached_app, client, url, auth.basic())
            assert not was_replayed and "AAA HEART EDITED" in response.get_data(as_text=True), url
        # A code created after page 1: the write read the new total before it committed, so the
        # page is replayed with it at once, as Flask would answer it.
        client.get(PAGE_1, headers=auth.basic())
        created = client.post(LIST, json={"pxcode": "ZZZ", "procedure": "ZZ LAST"}, headers=auth.basic())
        assert created.status_code == 201
        response, was_replayed = replayed(cached_app, client, PAGE_1, auth.basic())
        assert was_replayed and response.json["meta"]["total"] == 101
        cache_of(cached_app).clear()
        rendered, was_replayed = replayed(cached_app, client, PAGE_1, auth.basic())
        assert not was_replayed and without_limit_headers(rendered) == without_limit_headers(response)
        assert rendered.data == response.data
    finally:
        held.set()


def test_a_read_of_the_watch_older_than_a_worker_s_own_write_keeps_what_it_knows(cached_app, auth, monkeypatch):
    client = cached_app.test_client()
    for _ in range(2):
        client.get(ITEM, headers=auth.basic())
        other = client.get(OTHER, headers=auth.basic())
    held = holding_the_watch(cached_app, monkeypatch)
    try:
        watch = cache_of(cached_app).watch
        before = split_tag(watch.history_tag())
        changed = client.patch(
            OTHER, json={"procedure": "CHANGED BY THE API"},
            headers={**auth.basic(), "If-Match": other.headers["ETag"]},
        )
        assert changed.status_code == 200
        # The watch's read of the versions from before the write lands after it (as the held
        # thread's would): the history stays where the write brought it.
        type(watch)._follow_changes(watch, None, *before)
        assert replayed(cached_app, client, ITEM, auth.basic())[1]
    finally:
        held.set()


def test_a_worker_s_own_writes_keep_the_history_within_its_bound(cached_app, auth, monkeypatch):
    from starter.readcache import versionwatch

    monkeypatch.setattr(versionwatch, "HISTORY_CHANGES_MAX", 2)
    client = cached_app.test_client()
    client.get(ITEM, headers=auth.basic())
    held = holding_the_watch(cached_app, monkeypatch)
    watch = cache_of(cached_app).watch
    try:
        for code in ("057", "064", "065"):
            item = client.get(f"{LIST}{code}", headers=auth.basic())
            changed = client.patch(
                f"{LIST}{code}", json={"procedure": "CHANGED BY THE API"},
                headers={**auth.basic(), "If-Match": item.headers["ETag"]},
            )
            assert changed.status_code == 200
            assert len(watch._history.changes) <= 2
        # Started afresh: an answer from before it counts as changed, and the next write is known again.
        assert split_tag(watch.history_tag()) == split_tag(watch.current().codes)
    finally:
        held.set()


def test_a_worker_s_own_write_brings_in_the_changes_others_made_before_it(cached_app, auth, outside, monkeypatch):
    client = cached_app.test_client()
    for _ in range(2):
        client.get(PAGE_1, headers=auth.basic())
        item = client.get("/api/v1.0/pxcodes/069", headers=auth.basic())
    held = holding_the_watch(cached_app, monkeypatch)
    try:
        # Another replica changes page 1 (057); the watch is held and has not read it ...
        outside("UPDATE starter_pxcodes SET procedure = 'CHANGED ELSEWHERE' WHERE pxcode = '057'")
        # ... then this worker writes a code after the page: what it read before committing
        # includes the other change, so page 1 is rendered again, with it.
        changed = client.patch(
            "/api/v1.0/pxcodes/069", json={"procedure": "TRANSIENT ISCHEMIA EDITED"},
            headers={**auth.basic(), "If-Match": item.headers["ETag"]},
        )
        assert changed.status_code == 200
        response, was_replayed = replayed(cached_app, client, PAGE_1, auth.basic())
        assert not was_replayed and "CHANGED ELSEWHERE" in response.get_data(as_text=True)
        again, was_replayed = replayed(cached_app, client, PAGE_1, auth.basic())
        assert was_replayed and again.data == response.data
    finally:
        held.set()


@pytest.mark.parametrize(
    "sql, status",
    [
        ("UPDATE starter_pxcodes SET procedure = 'CHANGED' WHERE pxcode = '069'", 304),  # after page 1
        ("UPDATE starter_pxcodes SET procedure = 'CHANGED' WHERE pxcode = '057'", 200),  # on it
        ("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('ZZZ', 'ZZ LAST')", 200),  # another total
    ],
)
def test_a_worker_answers_304_to_another_worker_s_tag_of_a_page_no_write_changed(
    make_cached_app, auth, outside, sql, status
):
    one, other = make_cached_app(), make_cached_app()  # two workers of one database
    held = one.test_client().get(PAGE_1, headers=auth.basic())
    other.test_client().get(ITEM, headers=auth.basic())
    before = watching(other)  # its history starts here, before the write
    outside(sql)
    moved_on(other, before)
    client = other.test_client()
    response = client.get(PAGE_1, headers={**auth.basic(), "If-None-Match": held.headers["ETag"]})
    assert response.status_code == status
    if status == 304:
        assert response.headers["ETag"] == held.headers["ETag"]
        assert replayed(other, client, PAGE_1, {**auth.basic(), "If-None-Match": held.headers["ETag"]})[1]
    else:
        assert response.data != held.data
