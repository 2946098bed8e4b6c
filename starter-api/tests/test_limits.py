"""Rate limits, security headers and CORS."""

import os
import time
import uuid

import pytest

from helpers import command_names, new_caller, redis_limits, redis_round_trips, redis_url

ITEM = "/api/v1.0/pxcodes/039"


def test_rate_limit_headers_on_api_responses(client, auth):
    response = client.get(ITEM, headers=auth.basic())
    assert response.status_code == 200
    assert int(response.headers["X-RateLimit-Limit"]) > 0
    assert "X-RateLimit-Remaining" in response.headers
    assert "X-RateLimit-Reset" in response.headers
    # Retry-After belongs to refusals only (it used to flip between 0 and 1 on every 200).
    assert "Retry-After" not in response.headers


def test_per_user_limit_gives_429_json_with_retry_after(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_PER_USER="3 per minute")
    client = app.test_client()
    statuses = [client.get(ITEM, headers=auth.basic()).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get(ITEM, headers=auth.basic())
    assert response.status_code == 429
    assert response.json["status"] == 429
    assert response.json["error"] == "Too Many Requests"
    assert int(response.headers["Retry-After"]) > 0
    # Another user has a budget of its own.
    assert client.get(ITEM, headers=auth.reader()).status_code == 200


def test_per_address_limit(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_PER_ADDRESS="2 per minute")
    client = app.test_client()
    statuses = [client.get(ITEM, headers=h).status_code for h in (auth.basic(), auth.reader(), auth.basic())]
    assert statuses == [200, 200, 429]


def test_failed_logins_are_limited_harder(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_FAILED_LOGINS="3 per minute")
    client = app.test_client()
    statuses = [client.get(ITEM, headers=auth.basic("alice", "guess")).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    # Even the right password waits now: guessing from this address is paused.
    blocked = client.get(ITEM, headers=auth.basic())
    assert blocked.status_code == 429
    assert "failed logins" in blocked.json["message"]
    assert int(blocked.headers["Retry-After"]) >= 1


def test_requests_without_credentials_do_not_use_the_failed_login_budget(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_FAILED_LOGINS="2 per minute")
    client = app.test_client()
    assert [client.get(ITEM).status_code for _ in range(4)] == [401] * 4
    assert client.get(ITEM, headers=auth.basic()).status_code == 200


def test_limits_can_be_turned_off(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_ENABLED=False, RATELIMIT_PER_USER="1 per minute")
    client = app.test_client()
    assert [client.get(ITEM, headers=auth.basic()).status_code for _ in range(3)] == [200] * 3
    assert client.get(ITEM, headers=auth.basic("alice", "x")).status_code == 401


def test_health_probes_are_never_limited(make_app):
    app = make_app(RATELIMIT_PER_ADDRESS="1 per minute")
    client = app.test_client()
    assert [client.get("/healthz").status_code for _ in range(3)] == [200] * 3


def test_redis_storage_is_shared_between_workers(make_seeded_app, auth):
    """Two apps (two workers) on one Redis share each user's budget."""
    settings = {"RATELIMIT_STORAGE_URI": redis_url(), "RATELIMIT_PER_USER": "4 per minute"}
    first = make_seeded_app(**settings)
    # A user of its own: the shared Redis may hold counts from earlier runs.
    name = f"redis-{uuid.uuid4().hex[:12]}"
    assert first.test_cli_runner().invoke(args=["adduser", name, "pw"]).exit_code == 0
    headers = auth.basic(name, "pw")
    statuses = [first.test_client().get(ITEM, headers=headers).status_code for _ in range(2)]
    second = make_seeded_app(**settings)
    assert second.test_cli_runner().invoke(args=["adduser", name, "pw"]).exit_code == 0
    statuses += [second.test_client().get(ITEM, headers=headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 200, 200, 429]


def test_a_read_with_counters_in_redis_is_one_round_trip(make_seeded_app, auth):
    """Issue 12: the per-address and the per-user limit and the headers' values, in one call to Redis
    (flask-limiter alone: a script call per limit, then GET and TTL for the headers). One hit at a
    time (RATELIMIT_BATCH=1); batches make fewer (test_redis_batches)."""
    app = make_seeded_app(**redis_limits(READ_CACHE=False, RATELIMIT_BATCH=1))  # through Flask every time
    client = app.test_client()
    _, headers = new_caller(app, client)
    first = client.get(ITEM, headers=headers)  # connects and loads the script
    for url, extra in ((ITEM, {}), (ITEM, {"If-None-Match": first.headers["ETag"]}), ("/api/v1.0/pxcodes/", {})):
        with redis_round_trips() as sent:
            response = client.get(url, headers={**headers, **extra})
        assert response.status_code in (200, 304)
        assert len(sent) == 1, command_names(sent)
    assert int(response.headers["X-RateLimit-Remaining"]) == int(response.headers["X-RateLimit-Limit"]) - 1
    assert int(first.headers["X-RateLimit-Remaining"]) == int(first.headers["X-RateLimit-Limit"]) - 1
    assert 0 <= int(response.headers["X-RateLimit-Reset"]) - time.time() <= 2  # a window of a second


def test_redis_counts_are_flask_limiters_own(make_seeded_app, auth):
    """Counted in one call, in the keys and the window of flask-limiter's fixed-window strategy:
    a replica counting with stock flask-limiter shares the budgets."""
    from limits import parse
    from limits.storage import storage_from_string
    from limits.strategies import FixedWindowRateLimiter

    settings = redis_limits(READ_CACHE=False, RATELIMIT_PER_USER="5 per minute", RATELIMIT_PER_ADDRESS="7 per minute")
    app = make_seeded_app(**settings)
    client = app.test_client()
    name, headers = new_caller(app, client)
    assert [client.get(ITEM, headers=headers).status_code for _ in range(3)] == [200] * 3
    stock = FixedWindowRateLimiter(storage_from_string(settings["RATELIMIT_STORAGE_URI"]))
    per_user, per_address = parse("5/minute"), parse("7/minute")
    user_keys = (f"user:{name}", "per-user")
    address_keys = (client.environ_base["REMOTE_ADDR"], "api.get_pxcode")
    assert stock.get_window_stats(per_user, *user_keys).remaining == 2
    assert stock.get_window_stats(per_address, *address_keys).remaining == 4
    assert 55 < stock.get_window_stats(per_user, *user_keys).reset_time - time.time() <= 61
    # The other way round: what stock flask-limiter counts, this app refuses on.
    assert stock.hit(per_user, *user_keys) and stock.hit(per_user, *user_keys)
    refused = client.get(ITEM, headers=headers)
    assert refused.status_code == 429
    assert 55 <= int(refused.headers["Retry-After"]) <= 61
    assert refused.headers["X-RateLimit-Limit"] == "5" and refused.headers["X-RateLimit-Remaining"] == "0"


def test_a_request_refused_by_one_limit_is_not_counted_by_the_next(make_seeded_app, auth):
    """As flask-limiter (``fail_on_first_breach``): past the per-address limit, the per-user one
    (counted after it) is left alone."""
    from limits import parse
    from limits.storage import storage_from_string
    from limits.strategies import FixedWindowRateLimiter

    settings = redis_limits(READ_CACHE=False, RATELIMIT_PER_USER="10 per minute", RATELIMIT_PER_ADDRESS="2 per minute")
    app = make_seeded_app(**settings)
    client = app.test_client()
    name, headers = new_caller(app, client)
    assert [client.get(ITEM, headers=headers).status_code for _ in range(4)] == [200, 200, 429, 429]
    stock = FixedWindowRateLimiter(storage_from_string(settings["RATELIMIT_STORAGE_URI"]))
    user_keys = (f"user:{name}", "per-user")
    assert stock.get_window_stats(parse("10/minute"), *user_keys).remaining == 8


def test_unreachable_counter_store_does_not_stop_the_service(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_STORAGE_URI="redis://127.0.0.1:9", RATELIMIT_PER_USER="2 per minute")
    client = app.test_client()
    assert client.get(ITEM, headers=auth.basic("alice", "wrong")).status_code == 401
    statuses = [client.get(ITEM, headers=auth.basic()).status_code for _ in range(3)]
    # Served, and still limited: flask-limiter counts in memory meanwhile.
    assert statuses == [200, 200, 429]


def test_security_headers(client, auth):
    authenticated = client.get(ITEM, headers=auth.basic())
    assert authenticated.headers["X-Content-Type-Options"] == "nosniff"
    assert authenticated.headers["Cache-Control"] == "private"
    anonymous = client.get("/healthz")
    assert anonymous.headers["X-Content-Type-Options"] == "nosniff"
    assert "Cache-Control" not in anonymous.headers
    token = client.get("/auth/request-token", headers=auth.basic())
    assert token.headers["Cache-Control"] == "no-cache, no-store, max-age=0"
    not_modified = client.get(ITEM, headers={**auth.basic(), "If-None-Match": authenticated.headers["ETag"]})
    assert not_modified.headers["Cache-Control"] == "private"


def test_cors_is_closed_by_default(client, auth):
    response = client.get(ITEM, headers={**auth.basic(), "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options(ITEM, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_opens_for_configured_origins(make_seeded_app, auth):
    app = make_seeded_app(CORS_ORIGINS=["https://app.example"])
    client = app.test_client()
    allowed = client.get(ITEM, headers={**auth.basic(), "Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
    other = client.get(ITEM, headers={**auth.basic(), "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers



def test_one_users_failed_logins_do_not_lock_another_out(make_seeded_app, auth):
    """Issue 9 item 6: failures count per user name; another user at the same address is served."""
    app = make_seeded_app(RATELIMIT_FAILED_LOGINS="3 per minute")
    client = app.test_client()
    assert [client.get(ITEM, headers=auth.basic("alice", "guess")).status_code for _ in range(4)] == [401] * 3 + [429]
    assert "for this user name" in client.get(ITEM, headers=auth.basic()).json["message"]
    assert client.get(ITEM, headers=auth.reader()).status_code == 200
    assert client.get(ITEM, headers=auth.basic("bob", "typo")).status_code == 401


def test_an_address_spraying_names_meets_the_looser_per_address_budget(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_FAILED_LOGINS="3 per minute", RATELIMIT_FAILED_LOGINS_PER_ADDRESS="5 per minute")
    client = app.test_client()
    statuses = [client.get(ITEM, headers=auth.basic(f"name{i}", "guess")).status_code for i in range(6)]
    assert statuses == [401] * 5 + [429]
    refused = client.get(ITEM, headers=auth.reader())
    assert refused.status_code == 429 and "from this address" in refused.json["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    # Another address has a budget of its own.
    elsewhere = {"REMOTE_ADDR": "127.0.0.7"}
    assert client.get(ITEM, headers=auth.reader(), environ_base=elsewhere).status_code == 200


def test_credentials_verified_recently_are_not_refused_for_failed_logins(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_FAILED_LOGINS="2 per minute", RATELIMIT_FAILED_LOGINS_PER_ADDRESS="2 per minute")
    client = app.test_client()
    assert client.get(ITEM, headers=auth.reader()).status_code == 200
    token = client.get("/auth/request-token", headers=auth.basic()).json["token"]
    assert client.get(ITEM, headers=auth.bearer(token)).status_code == 200
    for name in ("bob", "alice", "carol"):
        client.get(ITEM, headers=auth.basic(name, "guess"))
    # The guesser is held; the users whose credentials the app has just proved are not.
    assert client.get(ITEM, headers=auth.basic("bob", "guess")).status_code == 429
    assert client.get(ITEM, headers=auth.reader()).status_code == 200
    assert client.get(ITEM, headers=auth.bearer(token)).status_code == 200


def test_bad_tokens_count_against_the_address(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_FAILED_LOGINS_PER_ADDRESS="2 per minute")
    client = app.test_client()
    statuses = [client.get(ITEM, headers=auth.bearer("forged.token")).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


@pytest.mark.parametrize(
    ("storage", "processes", "expected"),
    [("memory://", 1, 30), ("memory://", 2, 15), ("memory://", 4, 7), ("memory://", 64, 1), ("redis://x:6379", 2, 30)],
)
def test_a_memory_limit_is_shared_out_among_the_workers(storage, processes, expected):
    from starter.limits import budget

    config = {"RATELIMIT_STORAGE_URI": storage, "WORKER_PROCESSES": processes, "RATELIMIT_FAILED_LOGINS": "30 per minute"}
    item = budget(config, "RATELIMIT_FAILED_LOGINS")
    assert (item.amount, item.GRANULARITY.name) == (expected, "minute")


def test_the_worker_count_defaults_to_serve_pys():
    import importlib.util
    from pathlib import Path

    from starter.config import load

    spec = importlib.util.spec_from_file_location("serve", Path(__file__).resolve().parents[1] / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    clean = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WEB_CONCURRENCY", raising=False)
        workers = serve.settings()["workers"]
    assert load("production", environ=clean)["WORKER_PROCESSES"] == workers
    assert load("production", environ={**clean, "WEB_CONCURRENCY": "3"})["WORKER_PROCESSES"] == 3
    assert load("development", environ=clean)["WORKER_PROCESSES"] == 1
