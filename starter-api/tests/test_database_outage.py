"""A database that hangs, black-holes, crashes or vanishes after a commit, under the real ``serve.py``.

Issue 9, items 2, 5, 10 and 11, against a private PostgreSQL (``servers.py``) and the production
server in front of it (2 workers x 2 threads, DB_STATEMENT_TIMEOUT 2 s, DB_CONNECT_TIMEOUT 2 s):

* hung (SIGSTOP) or black-holed (accepts TCP, never answers): every request that needs the database
  is a JSON 503 with Retry-After, the first within DB_STATEMENT_TIMEOUT + 1 s, the ones after it
  within 1 s; ``/healthz`` always under 1 s; everything 200 again within 2 s of the database
  answering;
* a write whose connection dies right after its commit still answers what it wrote (201/200/204);
* an outage logs its start and end with a count, not a line per 503;
* ``kill -9`` of the postmaster under 64 keep-alive clients: every request gets an answer.
"""

import collections
import http.client
import json
import re
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import assert_json_error
from servers import (
    ADMIN,
    ADMIN_PASSWORD,
    REQUEST_TIMEOUT,
    STATEMENT_TIMEOUT_MS,
    BackgroundLoad,
    BlackHoleProxy,
    ProductionServer,
    errors_in,
    rows,
    wait_for,
)
from sqlalchemy import create_engine, text

FIRST_503_MAX = STATEMENT_TIMEOUT_MS / 1000 + 1.0  # the first request that meets the outage
LATER_503_MAX = 1.0  # every request after the first 503
HEALTHZ_MAX = 1.0
RECOVERY_MAX = 2.0  # from the database answering again to every request answered 200
TESTS_DIR = Path(__file__).resolve().parent


def _token_session(base):
    http = requests.Session()
    response = http.get(base + "/auth/request-token", auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    http.headers["Authorization"] = f"Bearer {response.json()['token']}"
    return http


class Load(BackgroundLoad):
    """API readers (replayable item reads, list pages, token requests) and a /healthz poller."""

    PATHS = ("/api/v1.0/pxcodes/039", "/api/v1.0/pxcodes/?per_page=5", "/auth/request-token")

    def __init__(self, base, token_session, readers=3):
        self.base = base
        self.authorization = token_session.headers["Authorization"]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.api = []  # (started, answered, status, retry_after, json_error_ok)
        self.healthz = []  # (started, latency, status)
        self.threads = [threading.Thread(target=self._reader, args=(i,), daemon=True) for i in range(readers)]
        self.threads.append(threading.Thread(target=self._health, daemon=True))

    def _reader(self, number):
        http = requests.Session()
        http.headers["Authorization"] = self.authorization
        i = number
        while not self.stop.is_set():
            path = self.PATHS[i % len(self.PATHS)]
            i += 1
            started = time.monotonic()
            # A new token needs the password (a token cannot mint one); the reads use the token.
            password = (ADMIN, ADMIN_PASSWORD) if path == "/auth/request-token" else None
            try:
                response = http.get(self.base + path, timeout=(3, 15), auth=password)
            except requests.RequestException as exc:
                with self.lock:
                    self.api.append((started, time.monotonic(), type(exc).__name__, None, False))
                continue
            answered = time.monotonic()
            ok = True
            if response.status_code >= 400:
                try:
                    assert_json_error(response, response.status_code)
                except AssertionError:
                    ok = False
            with self.lock:
                self.api.append((started, answered, response.status_code,
                                 response.headers.get("Retry-After"), ok))
            time.sleep(0.01)

    def _health(self):
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status = requests.get(self.base + "/healthz", timeout=(3, 15)).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            with self.lock:
                self.healthz.append((started, time.monotonic() - started, status))
            time.sleep(0.05)


def _assert_outage_behaviour(server, start_fault, end_fault, label):
    """Run ``start_fault`` for 3 s under load, then ``end_fault``; assert the issue's numbers."""
    session = _token_session(server.base)
    with Load(server.base, session) as load:
        time.sleep(1.0)
        t_fault = time.monotonic()
        start_fault()
        try:
            time.sleep(3.0)
        finally:
            t_back = time.monotonic()
            end_fault()
        time.sleep(RECOVERY_MAX + 1.0)

    during = [r for r in load.api if t_fault <= r[0] < t_back]
    refused = sorted((r for r in load.api if r[0] >= t_fault and r[2] == 503), key=lambda r: r[1])
    first = refused[0] if refused else None
    later = [r for r in during if first is not None and r[0] >= first[1]]
    not_ok_after = [r for r in load.api if r[0] >= t_back and r[2] != 200]
    recovery = max((r[1] for r in not_ok_after), default=t_back) - t_back
    health = [r for r in load.healthz if t_fault - 0.5 <= r[0] < t_back + 0.5]
    first_text = f"{first[1] - first[0]:.2f}s" if first else "none"
    print(f"\n{label}: {len(during)} requests during the outage {dict(collections.Counter(r[2] for r in during))},"
          f" slowest {max((r[1] - r[0] for r in during), default=0):.2f}s; first 503 {first_text};"
          f" answers after it max {max((r[1] - r[0] for r in later), default=0):.2f}s;"
          f" /healthz max {max((r[1] for r in health), default=0):.2f}s over {len(health)};"
          f" last non-200 {recovery:.2f}s after the database answered again")
    assert first is not None, f"{label}: no 503 during the outage"

    assert not [r for r in load.api if isinstance(r[2], str)], "a request got no answer"
    assert {r[2] for r in during} <= {200, 503}, collections.Counter(r[2] for r in during)
    assert all(r[3] and r[4] for r in load.api if r[2] == 503), "a 503 without Retry-After or the JSON body"
    # No worker thread stays blocked on the database past the timeout.
    assert max(r[1] - r[0] for r in during) <= FIRST_503_MAX
    assert first[1] - first[0] <= FIRST_503_MAX
    assert len(later) >= 20, f"too little traffic after the first 503: {len(later)}"
    slow = [round(r[1] - r[0], 2) for r in later if r[1] - r[0] > LATER_503_MAX]
    assert not slow, f"answers after the first 503 slower than {LATER_503_MAX}s: {slow}"
    assert health and all(r[2] == 200 for r in health), collections.Counter(r[2] for r in health)
    assert max(r[1] for r in health) < HEALTHZ_MAX
    assert recovery <= RECOVERY_MAX, f"requests failed until {recovery:.2f}s after recovery"
    assert [r for r in load.api if r[0] >= t_back + RECOVERY_MAX], "no traffic after recovery"
    assert "Unexpected exit from worker" not in server.log()


def test_hung_database_gives_fast_503s_and_healthz_stays_fast(private_postgres, service):
    """Every PostgreSQL process stopped (SIGSTOP): sockets open, the kernel ACKs, nothing answers."""
    _assert_outage_behaviour(service, private_postgres.freeze, private_postgres.thaw, "SIGSTOP")


@pytest.fixture(scope="module")
def black_hole(private_postgres):
    proxy = BlackHoleProxy(private_postgres.port)
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_service(fault_database, black_hole, tmp_path_factory):
    url = fault_database.replace(f":{black_hole.target_port}/", f":{black_hole.port}/")
    server = ProductionServer(url, tmp_path_factory.mktemp("server-proxied"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_black_holed_database_gives_fast_503s_and_healthz_stays_fast(black_hole, proxied_service):
    """A peer that accepts TCP and never answers, on open connections and new ones alike."""
    _assert_outage_behaviour(proxied_service, black_hole.black_hole, black_hole.restore, "black hole")


def test_an_outage_logs_its_start_and_end_not_every_503(private_postgres, service):
    """Connections refused (PostgreSQL stopped) under load: a few lines with a count, not one per 503."""
    session = _token_session(service.base)
    log_before = len(service.log().splitlines())
    with Load(service.base, session, readers=4) as load:
        time.sleep(0.5)
        private_postgres.stop("fast")
        try:
            time.sleep(2.0)
        finally:
            private_postgres.start()
        assert wait_for(lambda: load.api and load.api[-1][2] == 200, RECOVERY_MAX + 3)
        time.sleep(0.5)
    refused = sum(1 for r in load.api if r[2] == 503)
    lines = [line for line in service.log().splitlines()[log_before:] if "starter" in line]
    counted = sum(int(n) for n in re.findall(r"database back up after [\d.]+ s; (\d+) requests", "\n".join(lines)))
    print(f"\n{refused} requests answered 503; {len(lines)} log lines:\n" + "\n".join(lines))
    assert refused >= 100, f"too little traffic during the outage: {refused}"
    # Per worker (2): down, back up, the version watch losing its connection, an isolated 503 or two.
    assert len(lines) <= 12, "\n".join(lines[:20])
    assert sum("database down" in line for line in lines) >= 1
    assert counted >= refused // 2, f"the back-up lines count {counted} of {refused} refused requests"


@pytest.fixture
def after_commit_service(fault_database, tmp_path_factory):
    """serve.py running tests/fault_wsgi.py: the database goes away right after a marked commit."""
    server = ProductionServer(fault_database, tmp_path_factory.mktemp("server-after-commit"),
                              target="fault_wsgi:app", PYTHONPATH=str(TESTS_DIR))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_a_write_answers_what_it_committed_even_if_the_database_goes_away_after(
    private_postgres, fault_database, after_commit_service
):
    """A 503 means "not written": no answer depends on a query after the commit."""
    base = after_commit_service.base
    admin = create_engine(private_postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    http = _token_session(base)
    fault = {"X-Test-Fault": "after-commit"}
    url = f"{base}/api/v1.0/pxcodes/ACW1"

    def restore():
        with admin.connect() as connection:
            connection.execute(text('ALTER DATABASE "starter" WITH ALLOW_CONNECTIONS true'))
        started = time.monotonic()
        assert wait_for(lambda: http.get(url, timeout=REQUEST_TIMEOUT).status_code in (200, 404), 5)
        return time.monotonic() - started

    def stored():
        return rows(fault_database, "SELECT procedure FROM starter_pxcodes WHERE pxcode = 'ACW1'")

    try:
        created = http.post(f"{base}/api/v1.0/pxcodes/", json={"pxcode": "ACW1", "procedure": "WRITTEN ONCE"},
                            headers=fault, timeout=REQUEST_TIMEOUT)
        print(f"\nPOST {created.status_code}; recovered in {restore():.2f}s")
        assert created.status_code == 201, created.text
        assert created.json() == {"pxcode": "ACW1", "procedure": "WRITTEN ONCE", "url": url}
        assert created.headers["Location"] == url
        assert stored() == [("WRITTEN ONCE",)]
        etag = created.headers["ETag"]
        assert http.get(url, timeout=REQUEST_TIMEOUT).headers["ETag"] == etag

        for method, title in (("PUT", "REPLACED AFTER COMMIT"), ("PATCH", "EDITED AFTER COMMIT")):
            changed = http.request(method, url, json={"procedure": title}, headers={**fault, "If-Match": etag},
                                   timeout=REQUEST_TIMEOUT)
            print(f"{method} {changed.status_code}; recovered in {restore():.2f}s")
            assert changed.status_code == 200, changed.text
            assert changed.json() == {"pxcode": "ACW1", "procedure": title, "url": url}
            assert stored() == [(title,)]
            current = http.get(url, timeout=REQUEST_TIMEOUT)
            assert current.headers["ETag"] == changed.headers["ETag"] != etag
            etag = changed.headers["ETag"]

        deleted = http.delete(url, headers={**fault, "If-Match": etag}, timeout=REQUEST_TIMEOUT)
        print(f"DELETE {deleted.status_code}; recovered in {restore():.2f}s")
        assert deleted.status_code == 204, deleted.text
        assert stored() == []
    finally:
        with admin.connect() as connection:
            connection.execute(text('ALTER DATABASE "starter" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_keep_alive_clients_get_an_answer_to_every_request_through_a_crash(private_postgres, service):
    """``kill -9`` of the postmaster under 64 keep-alive clients (a third of them writing).

    Fast 503s to writes come before their bodies are read; granian then closed such
    connections, often without saying so, and the client's next request on it got no answer.
    """
    token = _token_session(service.base).headers["Authorization"]
    stop = threading.Event()
    lock = threading.Lock()
    answers = collections.Counter()  # (method, status, connection header)
    lost = collections.Counter()

    def client(number):
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=15)
        i = 0
        while not stop.is_set():
            i += 1
            if number % 3 == 0:
                method, path = "POST", "/api/v1.0/pxcodes/"
                body = json.dumps({"pxcode": f"KA{number:02d}{i:05d}", "procedure": "KEEP ALIVE"})
            else:
                method, path, body = "GET", ("/api/v1.0/pxcodes/039", "/api/v1.0/pxcodes/?per_page=5")[i % 2], None
            try:
                connection.request(method, path, body=body,
                                   headers={"Authorization": token, "Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    lost[f"{method} {type(exc).__name__}"] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=15)
                continue
            closes = (response.getheader("Connection") or "").lower() == "close"
            with lock:
                answers[(method, response.status, closes)] += 1
            if closes:  # as every HTTP client does
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=15)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(64)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)
        private_postgres.crash()
        time.sleep(1.5)
        private_postgres.start_after_crash()
        time.sleep(2.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a client hung"
    print(f"\nanswers {dict(answers)}; requests without an answer {dict(lost)}")
    assert not lost, f"requests without an answer: {dict(lost)}"
    refused_writes = sum(n for (method, status, _), n in answers.items() if method == "POST" and status == 503)
    announced = answers[("POST", 503, True)]
    assert refused_writes >= 20, f"too few writes met the crash: {refused_writes}"
    # Refused before its body was read: the answer says the connection closes.
    assert announced >= 0.9 * refused_writes, f"{announced} of {refused_writes} refused writes said Connection: close"
    assert sum(n for (_, status, _), n in answers.items() if status >= 500 and status != 503) == 0, \
        errors_in(service.log())
    assert "Unexpected exit from worker" not in service.log()
