"""Metrics, request ids and log lines, seen from outside a real ``serve.py`` with 2 workers."""

import glob
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from helpers import in_ci
from servers import ADMIN, ADMIN_PASSWORD, REQUEST_TIMEOUT, ProductionServer, free_port

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def _promtool():
    path = shutil.which("promtool")
    if path is None:
        if in_ci():
            pytest.fail("promtool (Debian's prometheus package) is required in CI")
        pytest.skip("promtool not installed")
    return path


def _samples(text):
    """``{(name, labels): value}`` of a Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            found[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return found


def _total(samples, name, **labels):
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for (n, l), v in samples.items() if n == name and all(w in l for w in wanted))


@pytest.fixture(scope="module")
def observed(fault_database, tmp_path_factory):
    """serve.py with 2 workers, metrics on their own port, JSON logs and the access line."""
    metrics_dir = tmp_path_factory.mktemp("metrics")
    server = ProductionServer(
        fault_database, tmp_path_factory.mktemp("server-observed"),
        WEB_CONCURRENCY="2", METRICS_PORT=str(free_port()), METRICS_DIR=str(metrics_dir),
        LOG_FORMAT="json", READ_CACHE="on",
    )
    server.metrics_dir = metrics_dir
    server.metrics_url = f"http://127.0.0.1:{server.env['METRICS_PORT']}/metrics"
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_every_worker_is_counted_once(observed):
    before = _samples(requests.get(observed.metrics_url, timeout=REQUEST_TIMEOUT).text)
    sent = 60
    for i in range(sent):  # a new connection each time: the kernel spreads them over the workers
        response = requests.get(observed.base + "/api/v1.0/pxcodes/039", auth=(ADMIN, ADMIN_PASSWORD),
                                timeout=REQUEST_TIMEOUT, headers={"Connection": "close"})
        assert response.status_code == 200
    after = _samples(requests.get(observed.metrics_url, timeout=REQUEST_TIMEOUT).text)
    counted = (_total(after, "starter_http_requests_total", route="/api/v1.0/pxcodes/<pxcode>", status="200")
               - _total(before, "starter_http_requests_total", route="/api/v1.0/pxcodes/<pxcode>", status="200"))
    assert counted == sent, {k: v for k, v in after.items() if k[0] == 'starter_http_requests_total'}
    writers = {re.search(r"_(\d+)\.db$", f).group(1) for f in glob.glob(str(observed.metrics_dir / "counter_*.db"))}
    assert len(writers) == 2, writers  # both workers answered, and counted into one sum
    histogram = _total(after, "starter_http_request_duration_seconds_count", route="/api/v1.0/pxcodes/<pxcode>")
    assert histogram >= sent
    # Repeated reads: most replayed by the read cache, the first in each worker by Flask.
    replayed = _total(after, "starter_read_cache_answers_total", answered_by="replay")
    assert replayed > sent / 2 and _total(after, "starter_read_cache_answers_total", answered_by="flask") >= 2


def test_the_metrics_port_is_not_the_api_and_needs_no_credentials(observed):
    assert requests.get(observed.metrics_url, timeout=REQUEST_TIMEOUT).status_code == 200
    assert requests.get(observed.base + "/metrics", timeout=REQUEST_TIMEOUT).status_code == 404


def test_promtool_finds_nothing_wrong_with_the_metrics(observed):
    text = requests.get(observed.metrics_url, timeout=REQUEST_TIMEOUT).text
    result = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)


def test_a_request_id_is_followed_through_its_log_lines(observed):
    request_id = "trace-" + os.urandom(6).hex()
    response = requests.get(observed.base + "/api/v1.0/pxcodes/none", auth=(ADMIN, ADMIN_PASSWORD),
                            headers={"X-Request-ID": request_id}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 404 and response.headers["X-Request-ID"] == request_id
    line = _log_line(observed, lambda entry: entry.get("request_id") == request_id)
    assert line["logger"] == "starter.access" and line["status"] == 404
    assert line["route"] == "/api/v1.0/pxcodes/<pxcode>" and line["user"] == ADMIN
    assert line["method"] == "GET" and line["replayed"] is False and line["address"] == "127.0.0.1"


@pytest.mark.parametrize("sent", [None, "", "x" * 200, "bad id with spaces", "caf\u00e9", "-leading-dash"])
def test_an_unusable_request_id_is_replaced(observed, sent):
    headers = {} if sent is None else {"X-Request-ID": sent}
    response = requests.get(observed.base + "/healthz", headers=headers, timeout=REQUEST_TIMEOUT)
    made = response.headers["X-Request-ID"]
    assert made != sent and re.fullmatch(r"[0-9a-f]{32}", made)


def _log_line(server, predicate, deadline=5):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for text in server.log().splitlines():
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if isinstance(entry, dict) and predicate(entry):
                return entry
        time.sleep(0.1)
    raise AssertionError(f"no such log line:\n{server.log()[-3000:]}")


def test_no_secret_reaches_the_logs(fault_database, tmp_path_factory):
    """Passwords, tokens, Authorization headers and the database password never appear in the output."""
    db_password = "db-" + os.urandom(6).hex()
    url = fault_database.replace("postgres@", f"postgres:{db_password}@")  # trust auth: ignored by the server
    server = ProductionServer(url, tmp_path_factory.mktemp("server-secrets"), LOG_FORMAT="json",
                              LOG_LEVEL="DEBUG", SERVER_ACCESS_LOG="on")
    wrong = "wrong-" + os.urandom(6).hex()
    try:
        server.wait_ready()
        base = server.base
        token = requests.get(base + "/auth/request-token", auth=(ADMIN, ADMIN_PASSWORD),
                             timeout=REQUEST_TIMEOUT).json()["token"]
        for headers in ({"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {token}x"},
                        {"Authorization": "Basic " + _b64(f"{ADMIN}:{wrong}")},
                        {"Authorization": "Basic " + _b64(f"{token}:")}):
            requests.get(base + "/api/v1.0/pxcodes/039", headers=headers, timeout=REQUEST_TIMEOUT)
        requests.get(base + "/api/v1.0/pxcodes/?q=heart", auth=(ADMIN, wrong), timeout=REQUEST_TIMEOUT)
    finally:
        server.stop()
    log = server.log()
    assert "starter.access" in log  # the lines were written
    for secret in (ADMIN_PASSWORD, wrong, token, db_password, _b64(f"{ADMIN}:{wrong}"), "fault-test-secret"):
        assert secret not in log, secret


def _b64(text):
    import base64

    return base64.b64encode(text.encode()).decode()


def test_the_gauges_are_sampled(observed):
    requests.get(observed.base + "/api/v1.0/pxcodes/039", auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT)
    time.sleep(1.5)  # a sampling round
    samples = _samples(requests.get(observed.metrics_url, timeout=REQUEST_TIMEOUT).text)
    assert ("starter_database_pool_connections", '{state="idle"}') in samples
    assert samples[("starter_database_pool_connections", '{state="checked_out"}')] == 0
    # The version watch re-reads every READ_CACHE_MAX_STALE/4 s: never much older than that.
    assert 0 < samples[("starter_data_version_age_seconds", "")] < 2.0
    assert samples[("starter_database_unreachable_seconds", "")] == 0  # the database answers


def test_the_time_the_database_is_unreachable_is_published(observed, private_postgres):
    """While PostgreSQL is stopped the gauge grows past zero; once it answers again it is back to 0."""

    def unreachable():
        text = requests.get(observed.metrics_url, timeout=REQUEST_TIMEOUT).text
        return _total(_samples(text), "starter_database_unreachable_seconds")

    def poke():  # a query string never asked before: the request needs the database
        requests.get(observed.base + f"/api/v1.0/pxcodes/?q=x{time.monotonic_ns()}",
                     auth=(ADMIN, ADMIN_PASSWORD), timeout=REQUEST_TIMEOUT)

    assert unreachable() == 0
    private_postgres.stop("fast")
    try:
        deadline, seen = time.monotonic() + 15, 0.0
        while time.monotonic() < deadline and seen < 1.0:
            poke()
            time.sleep(0.3)
            seen = unreachable()
        assert seen >= 1.0, f"starter_database_unreachable_seconds stayed at {seen} during the outage"
    finally:
        private_postgres.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and unreachable() != 0:
        poke()
        time.sleep(0.3)
    assert unreachable() == 0
