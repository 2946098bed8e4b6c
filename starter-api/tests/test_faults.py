"""Faults: the database goes away and comes back under the real production server; concurrent writers.

These tests start a PRIVATE PostgreSQL instance (``initdb`` + ``pg_ctl`` from the
machine's binaries, its own data folder and port; never the shared server at
5432) and the production server in front of it exactly as the Docker image runs
it (``python serve.py``: granian with the image's settings; only the address
differs), then stop and restart the database mid-traffic (harness: ``servers.py``).
"""

import json
import os
import signal
import socket
import threading
import time

import pytest
import requests
from helpers import assert_json_error
from servers import (
    ADMIN,
    ADMIN_PASSWORD,
    MAX_503_LATENCY,
    MAX_RECOVERY,
    REQUEST_TIMEOUT,
    ProductionServer,
    STATEMENT_TIMEOUT_MS,
    Traffic,
    errors_in,
    new_session,
    raw_request,
    rows,
    status_of,
    wait_for,
)
from sqlalchemy import create_engine, text

from starter import create_app
from starter.db import db


def test_database_outage_gives_fast_503s_and_recovers_without_losing_writes(
    private_postgres, fault_database, service, session
):
    base = service.base
    assert status_of(session, base + "/readyz") == 200

    with Traffic(service, session, prefix="FO") as traffic:
        time.sleep(1.5)  # traffic flowing against a healthy database
        t_down = time.monotonic()
        private_postgres.stop("immediate")
        stopped_in = time.monotonic() - t_down

        time.sleep(0.3)
        ready = requests.get(base + "/readyz", timeout=REQUEST_TIMEOUT)
        assert_json_error(ready, 503)
        assert ready.headers.get("Retry-After")
        listed = session.get(base + "/api/v1.0/pxcodes/", timeout=REQUEST_TIMEOUT)
        assert_json_error(listed, 503)
        assert listed.headers.get("Retry-After")

        time.sleep(2.5)  # a sustained outage under traffic
        t_up_begin = time.monotonic()
        private_postgres.start()
        t_up = time.monotonic()
        recovered = wait_for(
            lambda: status_of(session, base + "/readyz") == 200
            and status_of(session, base + "/api/v1.0/pxcodes/039") == 200,
            deadline=MAX_RECOVERY + 5,
        )
        recovery = time.monotonic() - t_up
        time.sleep(1.5)  # traffic flowing again after recovery

    records = traffic.records
    outage = [r for r in records if t_down + stopped_in < r[1] < t_up_begin]
    statuses = {}
    for r in records:
        statuses[r[3]] = statuses.get(r[3], 0) + 1
    print(f"\nstatuses: {statuses}; pg stop took {stopped_in:.2f}s; recovery {recovery:.2f}s")
    if outage:
        lat = sorted(r[2] for r in outage)
        print(f"during the outage: {len(outage)} requests, latency p50 {lat[len(lat) // 2]:.3f}s"
              f" max {lat[-1]:.3f}s")
    after_stop = [r for r in records if r[1] >= t_down + stopped_in and r[3] == 503]
    if after_stop:
        print(f"first 503 answered {after_stop[0][1] + after_stop[0][2] - t_down:.3f}s after the stop began")

    assert recovered, f"no recovery within {MAX_RECOVERY + 5}s:\n{service.log()[-3000:]}"
    assert recovery <= MAX_RECOVERY, f"recovered only after {recovery:.2f}s"
    assert not traffic.failures, traffic.failures[:10]
    # No connection errors, no 5xx but 503, every error JSON, every 503 with Retry-After.
    assert not [r for r in records if isinstance(r[3], str)], "connection errors (hung or dead worker)"
    assert not [r for r in records if isinstance(r[3], int) and r[3] >= 500 and r[3] != 503], errors_in(service.log())
    assert all(r[5] for r in records), "an error response without the JSON error body"
    assert all(r[4] for r in records if r[3] == 503), "a 503 without Retry-After"
    # During the outage requests were answered (503), quickly.
    assert len(outage) >= 10, f"too little traffic during the outage: {len(outage)}"
    assert {r[3] for r in outage} <= {503}, {r[3] for r in outage}
    slow = [r for r in outage if r[2] > MAX_503_LATENCY]
    assert not slow, f"{len(slow)} requests took longer than {MAX_503_LATENCY}s: {max(r[2] for r in slow):.2f}s"
    # No worker died (granian would start it again, losing the requests it held).
    assert "Unexpected exit from worker" not in service.log(), errors_in(service.log())
    # Every write acknowledged or retried to completion is stored exactly once, none lost.
    assert len(traffic.created) >= 20
    found = dict(
        rows(fault_database,
             "SELECT pxcode, count(*) FROM starter_pxcodes WHERE pxcode LIKE 'FO%' GROUP BY pxcode")
    )
    assert found == {code: 1 for code in traffic.created}
    titles = dict(rows(fault_database,
                       "SELECT pxcode, procedure FROM starter_pxcodes WHERE pxcode LIKE 'FO%'"))
    assert titles == {code: procedure for code, (procedure, _) in traffic.created.items()}
    # A first attempt never meets 409 (that would be a write applied by someone else).
    assert all(statuses[0] != 409 for _, statuses in traffic.created.values())
    retried = sum(1 for _, s in traffic.created.values() if len(s) > 1)
    print(f"writes: {len(traffic.created)}, retried through the outage: {retried}")
    assert retried >= 1, "no write met the outage"
    # The API reads back every code.
    for code in list(traffic.created)[:: max(1, len(traffic.created) // 20)]:
        assert session.get(f"{base}/api/v1.0/pxcodes/{code}", timeout=REQUEST_TIMEOUT).status_code == 200


def test_service_started_with_the_database_down_recovers(private_postgres, service, session):
    """Connections refused from the start (fresh workers' pools): 503 at once, then 200."""
    base = service.base
    private_postgres.stop("fast")
    try:
        for path in ("/readyz", "/api/v1.0/pxcodes/", "/auth/request-token"):
            started = time.monotonic()
            response = session.get(base + path, timeout=REQUEST_TIMEOUT)
            assert time.monotonic() - started < MAX_503_LATENCY
            assert_json_error(response, 503)
            assert response.headers["Retry-After"]
        assert requests.get(base + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200
    finally:
        private_postgres.start()
    t_up = time.monotonic()
    assert wait_for(lambda: status_of(session, base + "/api/v1.0/pxcodes/") == 200, MAX_RECOVERY)
    print(f"\nrecovered {time.monotonic() - t_up:.2f}s after the restart")


@pytest.mark.parametrize("clients", [2, 8])
def test_concurrent_creates_of_one_code_give_one_201(fault_database, service, session, clients):
    base = service.base
    results = {}
    for round_ in range(10):
        code = f"CC{clients}{round_:02d}"
        barrier = threading.Barrier(clients)
        statuses = []
        lock = threading.Lock()

        def create(i, code=code, barrier=barrier, statuses=statuses, lock=lock):
            http = new_session(session)
            barrier.wait(timeout=10)
            response = http.post(base + "/api/v1.0/pxcodes/",
                                 json={"pxcode": code, "procedure": f"CLIENT {i}"},
                                 timeout=REQUEST_TIMEOUT)
            if response.status_code == 409:
                assert_json_error(response, 409)
            with lock:
                statuses.append(response.status_code)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert sorted(statuses) == [201] + [409] * (clients - 1), statuses
        results[code] = statuses
    found = rows(fault_database,
                 "SELECT pxcode, count(*) FROM starter_pxcodes WHERE pxcode LIKE :p GROUP BY pxcode",
                 p=f"CC{clients}%")
    assert dict(found) == {code: 1 for code in results}


def test_concurrent_edits_with_one_etag_give_one_200(fault_database, service, session):
    """N editors holding the same ETag: exactly one write wins, the rest get 412 (no lost update)."""
    base = service.base
    clients = 8
    for round_ in range(10):
        code = f"CE{round_:02d}"
        created = session.post(base + "/api/v1.0/pxcodes/", json={"pxcode": code, "procedure": "ORIGINAL"},
                               timeout=REQUEST_TIMEOUT)
        assert created.status_code == 201, created.text
        etag = created.headers["ETag"]
        barrier = threading.Barrier(clients)
        outcomes = []
        lock = threading.Lock()

        def edit(i, code=code, etag=etag, barrier=barrier, outcomes=outcomes, lock=lock):
            http = new_session(session)
            method = "PUT" if i % 2 else "PATCH"
            barrier.wait(timeout=10)
            response = http.request(method, f"{base}/api/v1.0/pxcodes/{code}",
                                    json={"procedure": f"EDITOR {i}"}, headers={"If-Match": etag},
                                    timeout=REQUEST_TIMEOUT)
            with lock:
                outcomes.append((i, response.status_code))

        threads = [threading.Thread(target=edit, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        statuses = sorted(s for _, s in outcomes)
        assert statuses == [200] + [412] * (clients - 1), (code, outcomes)
        winner = next(i for i, s in outcomes if s == 200)
        stored = rows(fault_database, "SELECT procedure FROM starter_pxcodes WHERE pxcode = :c", c=code)
        assert stored == [(f"EDITOR {winner}",)]


def test_locked_table_answers_503_within_the_statement_timeout(private_postgres, fault_database, service, session):
    """A query stuck behind a lock is cancelled by the statement timeout: 503, no hung worker."""
    base = service.base
    engine = create_engine(fault_database)
    try:
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE starter_pxcodes IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            try:
                # A page nothing asked for yet (the warm-up reads page 1: it may come from a cache).
                response = session.get(base + "/api/v1.0/pxcodes/?page=3&per_page=7", timeout=(3, 8))
            except requests.Timeout:
                pytest.fail("the request hung behind a lock: no statement timeout")
            finally:
                locker.rollback()
            elapsed = time.monotonic() - started
    finally:
        engine.dispose()
    assert_json_error(response, 503)
    assert response.headers["Retry-After"]
    print(f"\nlocked table: 503 after {elapsed:.2f}s (DB_STATEMENT_TIMEOUT={STATEMENT_TIMEOUT_MS} ms)")
    assert elapsed < STATEMENT_TIMEOUT_MS / 1000 + 1.5
    assert status_of(session, base + "/api/v1.0/pxcodes/") == 200


def _app_losing_its_connection(database_url, after_view):
    """An in-process app with a test-only route whose database connection dies mid-request.

    The route opens a transaction, has the server terminate its backend, then either
    returns normally (the connection is found dead only at teardown) or queries again.
    """
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": "x", "LOG_DIR": None,
                      "PROPAGATE_EXCEPTIONS": False})
    killer = create_engine(database_url, isolation_level="AUTOCOMMIT")

    @app.get("/_faults/lose-connection")
    def lose_connection():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()  # a transaction is open
        with killer.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.1)
        if after_view == "query":
            db.session.execute(text("SELECT 1"))
        return {"ok": True}

    return app, killer


def test_connection_lost_before_teardown_is_not_a_500(fault_database):
    """The view succeeded, then the database link died: the teardown rollback must not raise."""
    app, killer = _app_losing_its_connection(fault_database, after_view="return")
    try:
        try:
            response = app.test_client().get("/_faults/lose-connection")
        except Exception as exc:  # noqa: BLE001 - the bug: the WSGI call itself raises
            pytest.fail(f"the request raised out of the app (the server answers a plain 500): {exc!r}")
        assert response.status_code in (200, 503), response.get_data(as_text=True)
        if response.status_code == 503:
            assert_json_error(response, 503)
    finally:
        killer.dispose()
        with app.app_context():
            db.engine.dispose()


def test_connection_lost_during_the_view_is_a_503(fault_database):
    app, killer = _app_losing_its_connection(fault_database, after_view="query")
    try:
        response = app.test_client().get("/_faults/lose-connection")
        assert_json_error(response, 503)
        assert response.headers["Retry-After"]
        # The pool recovers: the next request gets a fresh connection.
        assert app.test_client().get("/readyz").status_code == 200
    finally:
        killer.dispose()
        with app.app_context():
            db.engine.dispose()


def test_hung_database_readyz_answers_503_within_the_connect_timeout(private_postgres, service, session):
    """A database that hangs (SIGSTOP: sockets open, nothing answers) must not hang the probe.

    The orchestrator relies on /readyz to take the instance out of rotation; a pooled
    connection's pre-ping could block forever (granian never times a request out).
    """
    base = service.base
    for _ in range(10):  # every worker has a pooled connection to the healthy server
        assert status_of(session, base + "/readyz") == 200
    private_postgres.freeze()
    try:
        started = time.monotonic()
        try:
            response = requests.get(base + "/readyz", timeout=(3, 2 + 3))
        except requests.Timeout:
            pytest.fail(f"/readyz hung for {time.monotonic() - started:.1f}s on a hung database")
        assert_json_error(response, 503)
    finally:
        private_postgres.thaw()
    assert wait_for(lambda: status_of(session, base + "/readyz") == 200, MAX_RECOVERY)


@pytest.fixture(scope="module")
def limited_service(fault_database, private_redis, tmp_path_factory):
    """A second server whose rate-limit counters live in the private Redis."""
    server = ProductionServer(fault_database, tmp_path_factory.mktemp("server-redis"),
                      RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{private_redis.port}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_redis_outage_and_hang_keep_the_api_serving(private_redis, limited_service):
    """Killed, restarted and frozen Redis: every answer still 2xx, none slower than ~a second."""
    base = limited_service.base
    http = requests.Session()
    token = http.get(base + "/auth/request-token", auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT)
    assert token.status_code == 200, token.text
    http.headers["Authorization"] = f"Bearer {token.json()['token']}"
    results = []

    def burst(label, n=40):
        for i in range(n):
            started = time.monotonic()
            try:
                response = http.get(f"{base}/api/v1.0/pxcodes/{'039' if i % 2 else ''}", timeout=REQUEST_TIMEOUT)
                results.append((label, response.status_code, time.monotonic() - started,
                                response.headers.get("X-RateLimit-Limit")))
            except requests.RequestException as exc:
                results.append((label, type(exc).__name__, time.monotonic() - started, None))

    burst("redis up")
    private_redis.kill()
    burst("redis killed")
    private_redis.start()
    time.sleep(0.5)
    burst("redis back")
    private_redis.freeze()
    try:
        burst("redis hung", n=10)
    finally:
        private_redis.thaw()
    burst("redis thawed")
    by_label = {}
    for label, status, latency, _ in results:
        entry = by_label.setdefault(label, {"statuses": {}, "max": 0.0})
        entry["statuses"][status] = entry["statuses"].get(status, 0) + 1
        entry["max"] = max(entry["max"], latency)
    print("\n" + "\n".join(f"{k}: {v['statuses']} max {v['max']:.2f}s" for k, v in by_label.items()))
    assert all(status == 200 for _, status, _, _ in results), by_label
    # Redis timeouts are 0.5 s; a request may meet a few of them (limit checks and counts).
    assert max(latency for _, _, latency, _ in results) < 2.5, by_label
    assert "Traceback" not in limited_service.log(), errors_in(limited_service.log())


# name: (bytes, who answers, status). "server": granian itself, before the app (an empty body);
# "api": the request reaches Flask, which answers its JSON error.
WIRE_CASES = {
    "code-10000-chars": (b"GET /api/v1.0/pxcodes/" + b"9" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "api", 401),
    # Over serve.py's MAX_HEAD_BYTES (16 KiB): gunicorn answered 400 (its 8190-byte field limit).
    "header-20000-bytes": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + b"A" * 20_000
                           + b"\r\n\r\n", "server", 431),
    "header-without-colon": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", "server", 400),
    "bad-request-line": (b"GARBAGE\r\n\r\n", "server", 400),
    "bad-http-version": (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", "server", 400),
    "nul-in-path": (b"GET /api/v1.0/pxcodes/0\x0039 HTTP/1.1\r\nHost: x\r\n\r\n", "server", 400),
    "non-utf8-path": (b"GET /api/v1.0/pxcodes/\xff\xfe HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\n\r\n",
                      "server", 400),
    "bad-content-length": (b"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                           "server", 400),
    "two-content-lengths": (b"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n{}", "server", 400),
    # Transfer-Encoding wins over Content-Length (RFC 9112 6.3): the app gets the empty chunked body, and
    # the connection is closed after the answer, so nothing after it can pass for a second request.
    # gunicorn refused the request (400) instead.
    "smuggling-te-cl": (b"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "api", 401),
    # The body never completes: the API answers before reading it (no credentials).
    "truncated-body": (b"POST /api/v1.0/pxcodes/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pxcode\"",
                       "api", 401),
}


@pytest.mark.parametrize("name", sorted(WIRE_CASES))
def test_hostile_bytes_get_a_4xx_and_the_server_stays_up(service, name):
    data, who, expected = WIRE_CASES[name]
    status, answer = raw_request(service.port, data)
    assert status == expected, answer[:300]
    head, _, body = answer.partition(b"\r\n\r\n")
    if who == "server":
        assert body == b"" and b"connection: close" in head.lower(), answer[:300]
    else:
        error = json.loads(body)
        assert set(error) == {"status", "error", "message"} and error["status"] == expected, answer[:300]
    if name == "smuggling-te-cl":
        assert b"connection: close" in head.lower(), answer[:300]
    assert b"Traceback" not in answer
    assert requests.get(service.base + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200


def test_sigterm_lets_a_request_in_flight_finish(fault_database, tmp_path_factory):
    """docker stop: SIGTERM stops accepting at once, answers the request in flight, then exits 0."""
    server = ProductionServer(fault_database, tmp_path_factory.mktemp("server-stop"))
    engine = create_engine(fault_database)
    try:
        server.wait_ready()
        http = requests.Session()
        token = http.get(server.base + "/auth/request-token", auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT)
        assert token.status_code == 200, token.text
        http.headers["Authorization"] = f"Bearer {token.json()['token']}"
        result = {}
        with engine.connect() as locker:
            # The request waits behind a lock (under the statement timeout) while SIGTERM arrives.
            locker.execute(text("LOCK TABLE starter_pxcodes IN ACCESS EXCLUSIVE MODE"))

            def read():
                response = http.get(server.base + "/api/v1.0/pxcodes/?per_page=5", timeout=REQUEST_TIMEOUT)
                result["status"] = response.status_code

            reader = threading.Thread(target=read)
            reader.start()
            time.sleep(0.5)
            os.kill(server.pid, signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(requests.ConnectionError):
                requests.get(server.base + "/healthz", timeout=REQUEST_TIMEOUT)  # no longer accepting
            locker.rollback()  # the request in flight goes on
        reader.join(timeout=15)
        assert not reader.is_alive()
        assert result == {"status": 200}
        assert server.process.wait(timeout=25) == 0, server.log()[-2000:]
    finally:
        engine.dispose()
        server.stop()
    assert "Granian shutdown completed" in server.log()


def _workers(server):
    """The PIDs of the server's granian workers (its children)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == server.pid:
                pids.append(int(name))
    return pids


def _cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def test_sigterm_drains_kept_alive_connections_before_stopping(fault_database, tmp_path_factory):
    """docker stop behind a proxy: new connections are refused at once, the kept-alive ones get their
    next answer with Connection: close (so a proxy never sends on a connection being closed), /readyz
    says 503, and the server stops as soon as the last one is gone, not at SERVER_DRAIN_TIMEOUT."""
    server = ProductionServer(fault_database, tmp_path_factory.mktemp("server-drain"), SERVER_DRAIN_TIMEOUT="20")
    try:
        server.wait_ready()
        kept = [requests.Session() for _ in range(2)]
        for http in kept:
            http.auth = (ADMIN, ADMIN_PASSWORD)
            first = http.get(server.base + "/api/v1.0/pxcodes/039", timeout=REQUEST_TIMEOUT)
            assert first.status_code == 200 and first.headers.get("Connection", "").lower() != "close"
        os.kill(server.pid, signal.SIGTERM)
        time.sleep(1.0)
        with pytest.raises(requests.ConnectionError):
            requests.get(server.base + "/healthz", timeout=REQUEST_TIMEOUT)  # refused: a proxy retries it elsewhere
        assert server.process.poll() is None  # still draining: two connections are open
        answer = kept[0].get(server.base + "/api/v1.0/pxcodes/039", timeout=REQUEST_TIMEOUT)
        assert answer.status_code == 200 and answer.json()["pxcode"] == "039"
        assert answer.headers["Connection"].lower() == "close"
        ready = kept[1].get(server.base + "/readyz", timeout=REQUEST_TIMEOUT)
        assert_json_error(ready, 503)
        assert ready.headers["Connection"].lower() == "close" and ready.headers["Retry-After"] == "1"
        closed = time.monotonic()
        assert server.process.wait(timeout=15) == 0, server.log()[-2000:]
        assert time.monotonic() - closed < 5, "the server waited for SERVER_DRAIN_TIMEOUT, not for its connections"
    finally:
        server.stop()
    log = server.log()
    assert "draining: new connections refused; waiting for 2 open connection(s)" in log, log[-2000:]
    assert "still open" not in log and "still listening" not in log and "Granian shutdown completed" in log


def test_a_drain_ends_at_its_deadline_or_at_a_second_sigterm(fault_database, tmp_path_factory):
    """A client that keeps an idle connection open holds the drain only until SERVER_DRAIN_TIMEOUT;
    a second SIGTERM stops at once; the workers wait without spinning meanwhile."""
    for second_sigterm in (False, True):
        server = ProductionServer(fault_database, tmp_path_factory.mktemp("server-drain-deadline"),
                                  SERVER_DRAIN_TIMEOUT="30" if second_sigterm else "2")
        try:
            server.wait_ready()
            idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            workers = _workers(server)
            os.kill(server.pid, signal.SIGTERM)
            sent = time.monotonic()
            time.sleep(0.5)
            cpu = _cpu_seconds(workers)
            time.sleep(1.0)
            assert _cpu_seconds(workers) - cpu < 0.3, "a worker spins while it drains"
            if second_sigterm:
                os.kill(server.pid, signal.SIGTERM)
            assert server.process.wait(timeout=15) == 0, server.log()[-2000:]
            assert time.monotonic() - sent < 8
            idle.close()
        finally:
            server.stop()
        assert "1 connection(s) still open" in server.log() or second_sigterm, server.log()[-2000:]
