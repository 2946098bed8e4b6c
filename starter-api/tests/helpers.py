"""What tests share besides fixtures: the test users, credentials, data loading, error assertions."""

import base64
import os

from starter.db import STARTER_SQL, db, run_sql_script
from starter.models import User

USERNAME, PASSWORD = "alice", "wonderland"  # an admin
READER, READER_PASSWORD = "bob", "builder"  # reads only
ERROR_KEYS = {"status", "error", "message"}


def in_ci():
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


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
