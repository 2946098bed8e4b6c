"""What tests share besides fixtures: the test users, credentials, data loading, error assertions."""

import base64
import os
import uuid
from contextlib import contextmanager

from starter.db import STARTER_SQL, db, run_sql_script
from starter.models import User

USERNAME, PASSWORD = "alice", "wonderland"  # an admin
READER, READER_PASSWORD = "bob", "builder"  # reads only
ERROR_KEYS = {"status", "error", "message"}


def in_ci():
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def redis_url():
    """The Redis of the tests (``$TEST_REDIS_URL``); required in CI, else the test skips."""
    import pytest
    import redis

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        if in_ci():
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip(f"Redis not reachable: {exc}")
    return url


def redis_limits(**overrides):
    """Settings for counters in the tests' Redis."""
    return {"RATELIMIT_STORAGE_URI": redis_url(), **overrides}


def new_caller(app, *clients):
    """A user and an address no earlier run has counted in the shared Redis (the keys are
    made of them): adds the user to ``app``'s database, sets the clients' address, and
    returns ``(name, basic-auth headers)``."""
    name = f"redis-{uuid.uuid4().hex[:12]}"
    assert app.test_cli_runner().invoke(args=["adduser", name, "pw"]).exit_code == 0
    address = "127." + ".".join(str(b) for b in uuid.uuid4().bytes[:3])
    for client in clients:
        client.environ_base["REMOTE_ADDR"] = address
    return name, {"Authorization": "Basic " + base64.b64encode(f"{name}:pw".encode()).decode()}


@contextmanager
def redis_round_trips():
    """Count the commands (a pipeline: one) this process sends to any Redis while open."""
    from redis.connection import AbstractConnection

    sent = []
    send = AbstractConnection.send_packed_command

    def counting(self, command, *args, **kwargs):
        sent.append(command)
        return send(self, command, *args, **kwargs)

    AbstractConnection.send_packed_command = counting
    try:
        yield sent
    finally:
        AbstractConnection.send_packed_command = send


def command_names(sent):
    """The names of the commands ``redis_round_trips`` saw (first of each), for messages."""
    names = []
    for command in sent:
        packed = b"".join(command) if isinstance(command, (list, tuple)) else command
        names.append(packed.split(b"\r\n")[2].decode(errors="replace"))
    return names


def load_starter_data(users):
    """In an app context: load the 100 starter codes and add ``(name, password, is_admin)`` users."""
    run_sql_script(STARTER_SQL.read_text())
    for username, password, is_admin in users:
        user = User(username=username, is_admin=is_admin)
        user.password = password
        db.session.add(user)
    db.session.commit()


def assert_json_error(response, status):
    """The API's error contract: exact status, JSON, three keys, no traceback.

    ``response`` is Flask's test client's or requests'.
    """
    flask_response = hasattr(response, "get_data")
    text = response.get_data(as_text=True) if flask_response else response.text
    assert response.status_code == status, f"{response.status_code} {text[:500]}"
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.get_json() if flask_response else response.json()
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    for leak in ("Traceback", 'File "', "sqlalchemy", "psycopg2", "<html"):
        assert leak not in text, text[:500]
    return body


class AuthActions:
    """Credentials for requests: basic auth headers and tokens."""

    def __init__(self, client):
        self._client = client

    def reader(self):
        return self.basic(READER, READER_PASSWORD)

    def basic(self, username=USERNAME, password=PASSWORD):
        raw = f"{username}:{password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def bearer(self, token):
        return {"Authorization": f"Bearer {token}"}

    def token(self, username=USERNAME, password=PASSWORD):
        response = self._client.get("/auth/request-token", headers=self.basic(username, password))
        assert response.status_code == 200, response.json
        return response.json["token"]


@contextmanager
def recorded_sql(app):
    """Record the SQL statements ``app``'s engine sends while the block runs (a list, filled in)."""
    from sqlalchemy import event

    with app.app_context():
        engine = db.engine
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
