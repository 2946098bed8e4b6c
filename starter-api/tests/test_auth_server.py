"""Authentication against the real server (``python serve.py``: granian, 2 workers, scrypt, memory://).

What only several worker processes show: a failed-login budget that holds across them, the cap
on concurrent password hashes, and the Host check on the wire.
"""

import base64
import concurrent.futures
import http.client
import json

import pytest
import requests

from servers import ADMIN, ADMIN_PASSWORD, REQUEST_TIMEOUT, ProductionServer, raw_request

ITEM = "/api/v1.0/pxcodes/039"


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def fresh_get(port, path, authorization, source="127.0.0.1"):
    """One request on a connection of its own (so granian may hand it to either worker)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT[1],
                                            source_address=(source, 0))
    try:
        connection.request("GET", path, headers={"Authorization": authorization, "Connection": "close"})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(fault_database, tmp_path_factory):
    service = ProductionServer(
        fault_database, tmp_path_factory.mktemp("auth-server"),
        RATELIMIT_FAILED_LOGINS="6 per minute",
        RATELIMIT_FAILED_LOGINS_PER_ADDRESS="1000 per minute",
        WEB_CONCURRENCY="2",
    )
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def test_a_failed_login_budget_holds_across_the_workers(server):
    """memory:// counts per worker: each allows its share, so the total is the budget, not twice it."""
    statuses = [fresh_get(server.port, ITEM, basic("budget-victim", f"guess{i}"))[0] for i in range(20)]
    assert set(statuses) <= {401, 429}, statuses
    assert 3 <= statuses.count(401) <= 6, statuses


def test_concurrent_password_checks_beyond_the_cap_get_503_and_verified_users_are_served(server):
    http_session = requests.Session()
    victim = (ADMIN, ADMIN_PASSWORD)
    for _ in range(4):  # verified once per worker
        assert http_session.get(server.base + ITEM, auth=victim, timeout=REQUEST_TIMEOUT).status_code == 200

    def guess(number):
        # A new name and address each time: no failed-login budget holds these.
        return fresh_get(server.port, ITEM, basic(f"spray-{number}", "guess"), source=f"127.0.0.{10 + number % 200}")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(guess, range(64)))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {401, 503}, statuses
    assert statuses.count(503) > 0, statuses
    for status, headers, body in answers:
        assert json.loads(body)["status"] == status
        if status == 503:
            assert int(headers["retry-after"]) >= 1
    assert http_session.get(server.base + ITEM, auth=victim, timeout=REQUEST_TIMEOUT).status_code == 200


@pytest.mark.parametrize(
    "data",
    [
        b"GET /api/v1.0/pxcodes/039 HTTP/1.0\r\n\r\n",
        b"GET /api/v1.0/pxcodes/039 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        b"GET /api/v1.0/pxcodes HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    ],
    ids=["no-host", "evil-host", "evil-host-redirect"],
)
def test_a_host_not_trusted_or_missing_gets_a_json_400_on_the_wire(server, data):
    status, answer = raw_request(server.port, data)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status == 400, answer[:300]
    assert json.loads(body)["status"] == 400


def test_the_slash_redirect_on_the_wire_is_json_and_relative(server):
    status, answer = raw_request(
        server.port, b"GET /api/v1.0/pxcodes?q=hip HTTP/1.1\r\nHost: localhost:5000\r\nConnection: close\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status == 308, answer[:300]
    assert b"\r\nlocation: /api/v1.0/pxcodes/?q=hip\r\n" in head.lower() + b"\r\n"
    assert json.loads(body)["status"] == 308
