"""JSON log lines: the access line (its own short way through the formatter) and the app's lines
share one shape."""

import io
import json
import logging

import pytest
from starter.observability import logs
from starter.observability.metrics import Metrics
from starter.observability.middleware import REPLAYED, ROUTE, USER, RequestObserver, access_log

FIRST_KEYS = ["time", "level", "logger", "message", "request_id"]


@pytest.fixture
def json_lines():
    """Lines the access logger writes as JSON, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.RequestIdFilter())
    level, propagate = access_log.level, access_log.propagate
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    access_log.removeHandler(handler)
    access_log.setLevel(level)
    access_log.propagate = propagate


def _inner_app(environ, start_response):
    environ.update({ROUTE: "/api/v1.0/pxcodes/<pxcode>", USER: "alice", REPLAYED: True})
    # Written while the request runs: the app's own line, stamped with the same request id.
    access_log.warning("caf\u00e9 %s", "inside")
    start_response("404 NOT FOUND", [("Content-Type", "application/json")])
    return [b"{}"]


def test_the_access_line_has_every_field_and_the_shape_of_other_lines(json_lines):
    observer = RequestObserver(_inner_app, Metrics(), log_access=True)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/v1.0/pxcodes/Z99", "REMOTE_ADDR": "10.0.0.7",
               "HTTP_X_REQUEST_ID": "trace-1"}
    list(observer(environ, lambda status, headers, exc_info=None: None))
    inside, access = json_lines()
    assert list(inside)[:5] == FIRST_KEYS and inside["message"] == "caf\u00e9 inside"
    assert inside["request_id"] == "trace-1" and inside["level"] == "WARNING"
    assert list(access)[:5] == FIRST_KEYS
    assert access["logger"] == "starter.access" and access["level"] == "INFO"
    assert access["request_id"] == "trace-1" and access["time"][:2] == "20"
    assert access["message"].startswith("GET /api/v1.0/pxcodes/<pxcode> 404 ")
    assert {k: access[k] for k in ("method", "route", "path", "status", "user", "replayed", "address")} == {
        "method": "GET", "route": "/api/v1.0/pxcodes/<pxcode>", "path": "/api/v1.0/pxcodes/Z99",
        "status": 404, "user": "alice", "replayed": True, "address": "10.0.0.7",
    }
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
    assert logs.ACCESS_FIELDS not in access  # its fields are spread, not nested
