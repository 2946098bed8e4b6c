"""Counters in Redis taken in batches (RATELIMIT_BATCH; docs/api.md, "Counters taken in batches")."""

import time
import uuid

import pytest

from helpers import command_names, new_caller, redis_limits, redis_round_trips, redis_url

ITEM = "/api/v1.0/pxcodes/039"
# Windows long enough not to roll during a test; per address looser, so the per-user limit refuses.
LARGE = {"READ_CACHE": False, "RATELIMIT_PER_USER": "100000 per hour", "RATELIMIT_PER_ADDRESS": "200000 per hour"}


def stock():
    """flask-limiter's own strategy on the tests' Redis: what a replica counting one by one sees."""
    from limits.storage import storage_from_string
    from limits.strategies import FixedWindowRateLimiter

    return FixedWindowRateLimiter(storage_from_string(redis_url()))


def remaining(response):
    return int(response.headers["X-RateLimit-Remaining"])


def test_a_batched_bucket_makes_far_fewer_round_trips(make_seeded_app):
    """64 reads through Flask: 2 calls to Redis (a batch of 32 of each limit at hits 33 and 65), not
    64; the headers still count one a request, and Redis holds what the batches took."""
    from limits import parse

    app = make_seeded_app(**redis_limits(RATELIMIT_BATCH=32, **LARGE))
    client = app.test_client()
    name, headers = new_caller(app, client)
    first = client.get(ITEM, headers=headers)  # connects, loads the script, checks the password
    with redis_round_trips() as sent:
        answers = [client.get(ITEM, headers=headers) for _ in range(64)]
    assert [r.status_code for r in answers] == [200] * 64
    assert command_names(sent) == ["EVALSHA"] * 2  # one hit at a time: 64
    assert [remaining(r) for r in [first, *answers]] == list(range(200000 - 1, 200000 - 66, -1))
    address = (client.environ_base["REMOTE_ADDR"], "api.get_pxcode")
    assert stock().get_window_stats(parse("100000/hour"), f"user:{name}", "per-user").remaining == 100000 - 96
    assert stock().get_window_stats(parse("200000/hour"), *address).remaining == 200000 - 96


def test_two_workers_never_exceed_a_shared_limit_and_fall_short_by_at_most_their_spare_hits(make_seeded_app):
    """200/minute, batches of at most 200 // 64 = 3: worker one takes a batch (its request and 2 spare),
    worker two gets the other 197, then 429; worker one's 2 spare hits still serve, then 429 everywhere:
    200 in all, never more, across workers."""
    settings = redis_limits(**{**LARGE, "RATELIMIT_PER_USER": "200 per minute"}, RATELIMIT_BATCH=32)
    first, second = make_seeded_app(**settings), make_seeded_app(**settings)
    one, other = first.test_client(), second.test_client()
    _, headers = new_caller(first, one, other)
    assert one.get(ITEM, headers=headers).status_code == 200
    statuses = [other.get(ITEM, headers=headers).status_code for _ in range(205)]
    assert statuses == [200] * 197 + [429] * 8
    assert [one.get(ITEM, headers=headers).status_code for _ in range(3)] == [200, 200, 429]
    assert other.get(ITEM, headers=headers).status_code == 429


def test_two_workers_taking_turns_get_the_whole_limit(make_seeded_app):
    settings = redis_limits(**{**LARGE, "RATELIMIT_PER_USER": "300 per minute"}, RATELIMIT_BATCH=32)
    first, second = make_seeded_app(**settings), make_seeded_app(**settings)
    one, other = first.test_client(), second.test_client()
    _, headers = new_caller(first, one, other)
    answered = [client.get(ITEM, headers=headers).status_code for _ in range(160) for client in (one, other)]
    assert answered.count(200) == 300 and answered[-20:] == [429] * 20


@pytest.mark.parametrize("limit", ["5 per minute", "100 per minute", "127 per minute"])
def test_a_limit_under_twice_the_share_is_counted_one_hit_at_a_time(make_seeded_app, limit):
    """Small limits (the failed logins' 30/minute, the tests') stay exact: every request one call to
    Redis, as with RATELIMIT_BATCH=1, and Redis holds exactly the requests."""
    from limits import parse

    app = make_seeded_app(**redis_limits(**{**LARGE, "RATELIMIT_PER_USER": limit}, RATELIMIT_BATCH=32))
    client = app.test_client()
    name, headers = new_caller(app, client)
    client.get(ITEM, headers=headers)  # the script loaded
    for _ in range(3):
        with redis_round_trips() as sent:
            assert client.get(ITEM, headers=headers).status_code == 200
        assert command_names(sent) == ["EVALSHA"]
    assert stock().get_window_stats(parse(limit), f"user:{name}", "per-user").remaining == parse(limit).amount - 4


def test_a_batch_shrinks_as_its_bucket_nears_its_limit(make_app):
    """At most a 64th of what is left, at most RATELIMIT_BATCH: 1000 left: 15; 100 left: 1."""
    from limits import parse

    from starter import limits

    app = make_app(**redis_limits(RATELIMIT_BATCH=32))
    strategy, batches = limits.limiter.limiter, limits.batches(app)
    item, key = parse("1000/hour"), ("batch-test", uuid.uuid4().hex)
    counter = strategy.storage.prefixed_key(item.key_for(*key))
    redis = strategy.storage.get_connection()
    assert strategy.count([(item, key)], batches) == [(1, pytest.approx(time.time() + 3600, abs=2))]
    assert int(redis.get(counter)) == 15
    assert [strategy.count([(item, key)], batches)[0][0] for _ in range(14)] == list(range(2, 16))
    assert int(redis.get(counter)) == 15  # spent locally
    redis.incrby(counter, 885)  # other workers: 900 of 1000 counted
    assert strategy.count([(item, key)], batches)[0][0] == 901
    assert int(redis.get(counter)) == 901
    redis.incrby(counter, 99)
    assert strategy.count([(item, key)], batches)[0][0] == 1001  # refused, counted as flask-limiter does


def test_spare_hits_are_not_spent_in_the_next_window(make_seeded_app):
    """A window's batch ends with it: the next window starts a new count (and a new batch), its
    headers from 0 and its reset a window later, as flask-limiter's fixed window."""
    from limits import parse

    window = "6400 per 2 seconds"  # per address: the limit the headers show
    app = make_seeded_app(**redis_limits(**{**LARGE, "RATELIMIT_PER_ADDRESS": window}, RATELIMIT_BATCH=32))
    client = app.test_client()
    _, headers = new_caller(app, client)
    before = [client.get(ITEM, headers=headers) for _ in range(3)]
    address = (client.environ_base["REMOTE_ADDR"], "api.get_pxcode")
    assert stock().get_window_stats(parse(window), *address).remaining == 6400 - 32
    assert [remaining(r) for r in before] == [6399, 6398, 6397]
    reset = int(before[0].headers["X-RateLimit-Reset"])
    time.sleep(2.1)  # the window began at the first of these requests
    with redis_round_trips() as sent:
        after = client.get(ITEM, headers=headers)
    assert command_names(sent) == ["EVALSHA"]  # the old batch is not spent: a new one is taken
    assert remaining(after) == 6399 and int(after.headers["X-RateLimit-Reset"]) > reset
    assert stock().get_window_stats(parse(window), *address).remaining == 6400 - 32


def test_failed_logins_are_counted_one_at_a_time(make_seeded_app, auth):
    from limits import parse

    app = make_seeded_app(**redis_limits(RATELIMIT_BATCH=32, RATELIMIT_FAILED_LOGINS_PER_ADDRESS="6400 per hour"))
    client = app.test_client()
    new_caller(app, client)  # an address of its own
    for _ in range(3):
        assert client.get(ITEM, headers=auth.basic("alice", "guess")).status_code == 401
    address = ("failed-login-address", client.environ_base["REMOTE_ADDR"])
    assert stock().get_window_stats(parse("6400/hour"), *address).remaining == 6400 - 3


def test_a_worker_holds_one_batch_of_a_bucket_whatever_its_threads_do():
    """While a thread takes a batch of a bucket, another that finds none in hand waits for it (and
    asks for its own hit only if it waited in vain): the bound (docs/api.md) counts one batch a worker."""
    from starter.redislimits import Batches

    batches = Batches(32)
    ends = time.monotonic() + 60
    assert batches.take("k") == (None, True)  # claimed: the caller asks Redis for a batch
    assert batches.take("k", wait=0.05) == (None, False)  # another thread, meanwhile: in vain
    assert not batches.claim("k")  # a later bucket of another request: its own hit only
    batches.keep("k", 2, 4, ends, 100.0)
    batches.release("k")
    assert not batches.claim("k")  # one held
    assert [batches.take("k")[0] for _ in range(3)] == [(2, 100.0), (3, 100.0), (4, 100.0)]
    assert not batches.has("k") and batches.claim("k")
    batches.release("k")  # the call failed: nothing kept
    assert batches.claim("k")
    batches.keep("k", 2, 1, ends, 100.0)  # a batch of one: the request's own hit, nothing kept
    batches.release("k")
    batches.keep("gone", 2, 9, time.monotonic(), 100.0)  # the window over
    assert not batches.has("k") and not batches.has("gone")


def test_threads_of_a_worker_wait_for_the_batch_being_taken(make_seeded_app):
    """Eight threads finding a bucket spent at once: one takes a batch, the others take their hits
    from it (no call of their own; each taking a batch would count up to 8 x 32)."""
    import threading

    from limits import parse

    from starter import limits

    app = make_seeded_app(**redis_limits(RATELIMIT_BATCH=32))
    strategy, batches = limits.limiter.limiter, limits.batches(app)
    item, key = parse("100000/hour"), ("batch-test", uuid.uuid4().hex)
    counter = strategy.storage.prefixed_key(item.key_for(*key))
    start = threading.Barrier(8)
    places = []

    def hit():
        start.wait()
        places.append(strategy.count([(item, key)], batches)[0][0])

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(places) == list(range(1, 9))
    assert int(strategy.storage.get_connection().get(counter)) == 32


def test_the_batch_is_a_setting_of_the_environment():
    from starter.config import ConfigError, load

    assert load("production", environ={"SECRET_KEY": "k"})["RATELIMIT_BATCH"] == 32
    assert load("production", environ={"SECRET_KEY": "k", "RATELIMIT_BATCH": "1"})["RATELIMIT_BATCH"] == 1
    with pytest.raises(ConfigError, match="RATELIMIT_BATCH"):
        load("production", environ={"SECRET_KEY": "k", "RATELIMIT_BATCH": "0"})


def test_one_hit_at_a_time_keeps_no_batches(make_app):
    from starter import limits

    assert limits.batches(make_app(**redis_limits(RATELIMIT_BATCH=1))) is None
    assert limits.batches(make_app(RATELIMIT_BATCH=32)) is None  # memory://: nothing to batch


def test_a_batch_whose_window_ends_while_its_last_hit_is_taken_is_no_error():
    """The window's end between finding the batch and dropping it (seen as a 500 under load
    through the proxy: the cache's delete of an expired key raised)."""
    from starter.redislimits import Batches

    clock = [100.0]
    batches = Batches(32, timer=lambda: clock[0])
    batches.keep("bucket", 7, 7, 101.0, 1234.0)
    found = batches._spare.get

    def found_then_the_window_ends(key, default=None):
        spare = found(key, default)
        clock[0] = 102.0
        return spare

    batches._spare.get = found_then_the_window_ends
    assert batches.take("bucket") == ((7, 1234.0), False)
    assert not batches.has("bucket")
