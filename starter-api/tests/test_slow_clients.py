"""Slow clients against the real production server (``python serve.py``, private PostgreSQL).

Request bodies that stall or trickle must not hold up other requests, must end in a 408 after
REQUEST_BODY_TIMEOUT, and a chunked body is held to MAX_CONTENT_LENGTH like one with a length
(starter/http/bodies.py).
"""

import threading
import time

import pytest
import requests
from servers import (
    REQUEST_TIMEOUT,
    ProductionServer,
    StalledPost,
    chunked_post,
    rows,
)

BODY_TIMEOUT = 2  # REQUEST_BODY_TIMEOUT given to the server (seconds)
STALLED = 64  # the figure
LIST = "/api/v1.0/pxcodes/"
MAX_LATENCY = 1.0  # the p99 for other requests while bodies stall


@pytest.fixture(scope="module")
def slow_service(fault_database, tmp_path_factory):
    server = ProductionServer(fault_database, tmp_path_factory.mktemp("slow"),
                              REQUEST_BODY_TIMEOUT=str(BODY_TIMEOUT))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bearer(slow_service):
    from servers import ADMIN, ADMIN_PASSWORD

    response = requests.get(slow_service.base + "/auth/request-token", auth=(ADMIN, ADMIN_PASSWORD),
                            timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200, response.text
    return f"Bearer {response.json()['token']}"


def probe(base, path, authorization, stop, records):
    """GET ``base + path`` (a string, or a function of the attempt's number) until ``stop``."""
    http = requests.Session()
    if authorization:
        http.headers["Authorization"] = authorization
    number = 0
    while not stop.is_set():
        number += 1
        started = time.monotonic()
        try:
            url = base + (path(number) if callable(path) else path)
            status = http.get(url, timeout=(3, 5)).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        records.append((time.monotonic() - started, status))
        time.sleep(0.02)


def p99(records):
    latencies = sorted(latency for latency, _ in records)
    return latencies[int(0.99 * (len(latencies) - 1))]


@pytest.mark.parametrize("trickle", [False, True], ids=["stall", "trickle"])
def test_stalled_bodies_leave_other_requests_alone_and_get_408(slow_service, bearer, trickle):
    stop = threading.Event()
    stalled = [StalledPost(slow_service.port, LIST, 60000, bearer, trickle=trickle, stop=stop)
               for _ in range(STALLED)]
    started = time.monotonic()
    for client in stalled:
        client.start()
    records = {"healthz": [], "item": [], "search": []}
    probes = [
        threading.Thread(target=probe, args=(slow_service.base, "/healthz", None, stop, records["healthz"])),
        threading.Thread(target=probe, args=(slow_service.base, LIST + "039", bearer, stop, records["item"])),
        # Always through Flask and the database (a new query string each time is never replayed).
        threading.Thread(target=probe, args=(slow_service.base, lambda n: f"{LIST}?code=0&per_page={n % 100 + 1}&page=1", bearer, stop,
                                             records["search"])),
    ]
    try:
        for thread in probes:
            thread.start()
        deadline = time.monotonic() + BODY_TIMEOUT + 8
        while time.monotonic() < deadline and any(c.status is None for c in stalled):
            time.sleep(0.1)
        time.sleep(0.5)  # and a little while the 408'd clients keep their connections
    finally:
        stop.set()
        for thread in probes + stalled:
            thread.join(timeout=10)
    for name, done in records.items():
        assert len(done) >= 20, (name, len(done))
        assert {status for _, status in done} == {200}, (name, done[:5], slow_service.log()[-2000:])
        assert p99(done) < MAX_LATENCY, (name, p99(done))
    statuses = [client.status for client in stalled]
    assert statuses == [408] * STALLED, statuses
    for client in stalled:
        assert BODY_TIMEOUT - 0.5 <= client.answered_after <= BODY_TIMEOUT + 6, client.answered_after
        body = client.json()
        assert body["status"] == 408 and body["error"] == "Request Timeout", body
        assert b"connection: close" in client.answer.lower()
    assert time.monotonic() - started < BODY_TIMEOUT + 15
    # The service is still whole: a write goes through.
    created = requests.post(slow_service.base + LIST, json={"pxcode": f"SLOW{int(trickle)}", "procedure": "X"},
                            headers={"Authorization": bearer}, timeout=REQUEST_TIMEOUT)
    assert created.status_code == 201, created.text


def test_unauthenticated_stalled_bodies_get_401_at_once_and_are_closed(slow_service):
    stop = threading.Event()
    stalled = [StalledPost(slow_service.port, LIST, 60000, stop=stop) for _ in range(STALLED)]
    for client in stalled:
        client.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(c.closed_after is None for c in stalled):
            time.sleep(0.05)
    finally:
        stop.set()
        for client in stalled:
            client.join(timeout=10)
    assert [c.status for c in stalled] == [401] * STALLED
    # Well before the body timeout: no slot, no reader, the connection closed by the server.
    assert max(c.answered_after for c in stalled) < BODY_TIMEOUT
    assert all(c.closed_after is not None and c.closed_after < BODY_TIMEOUT for c in stalled)
    assert requests.get(slow_service.base + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200


@pytest.mark.parametrize("chunks", [
    pytest.param([b'{"pxcode": "CHK1", "procedure": "CHUNKED"}', b" " * 65536] * 32, id="json-then-2MB-spaces"),
    pytest.param([b'{"pxcode": "CHK2", "procedure": "' + b"P" * 70_000 + b'"}'], id="70KB-object"),
])
def test_a_chunked_body_over_the_limit_is_413_and_nothing_is_stored(slow_service, bearer, fault_database, chunks):
    status, body = chunked_post(slow_service.port, LIST, bearer, chunks)
    assert status == 413, body
    assert body["status"] == 413 and body["error"] == "Request Entity Too Large", body
    assert rows(fault_database, "SELECT pxcode FROM starter_pxcodes WHERE pxcode LIKE 'CHK%'") == []


def test_a_chunked_body_within_the_limit_is_stored(slow_service, bearer, fault_database):
    status, body = chunked_post(slow_service.port, LIST, bearer,
                                [b'{"pxcode": "CHK3", ', b'"procedure": "CHUNKED"}', b" " * 1000])
    assert status == 201, body
    assert rows(fault_database, "SELECT procedure FROM starter_pxcodes WHERE pxcode = 'CHK3'") == [("CHUNKED",)]
