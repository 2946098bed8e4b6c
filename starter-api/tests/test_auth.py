"""Authentication: basic auth, tokens (as username and as Bearer), 401 bodies."""

import base64

import pytest
from itsdangerous import TimestampSigner

from starter.db import db
from starter.models import User

ITEM = "/api/v1.0/pxcodes/039"
TOKEN_URL = "/auth/request-token"


def _assert_401(response, scheme="Basic"):
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith(f'{scheme} realm="starter-api"')
    assert response.json == {
        "status": 401,
        "error": "Unauthorized",
        "message": "valid credentials required",
    }


@pytest.mark.parametrize(
    "url", ["/api/v1.0/pxcodes/", ITEM, "/api/v1.0/pxcodes/000", TOKEN_URL]
)
def test_every_api_route_requires_auth(client, url):
    _assert_401(client.get(url))


def test_post_requires_auth(client):
    _assert_401(client.post("/api/v1.0/pxcodes/", json={"pxcode": "1", "procedure": "x"}))


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("nobody", "wonderland"), ("alice", ""), ("", "wonderland"), ("ALICE", "wonderland")],
)
def test_bad_credentials_are_401(client, auth, username, password):
    _assert_401(client.get(ITEM, headers=auth.basic(username, password)))


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + "A" * 20000,
        "Digest username=alice",
        "Bearer",
        "",
    ],
)
def test_malformed_authorization_headers_are_401(client, header):
    response = client.get(ITEM, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json["status"] == 401


def test_basic_auth_works(client, auth):
    assert client.get(ITEM, headers=auth.basic()).status_code == 200


def test_request_token(client, auth, app):
    response = client.get(TOKEN_URL, headers=auth.basic())
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-cache, no-store, max-age=0"
    assert response.json["expiration"] == app.config["TOKEN_EXPIRATION"] == 600
    assert isinstance(response.json["token"], str) and len(response.json["token"]) > 20


def test_token_as_basic_username_with_empty_password(client, auth):
    token = auth.token()
    assert client.get(ITEM, headers=auth.basic(token, "")).status_code == 200


def test_token_as_bearer(client, auth):
    token = auth.token()
    assert client.get(ITEM, headers=auth.bearer(token)).status_code == 200


def test_token_can_renew_itself(client, auth):
    token = auth.token()
    renewed = client.get(TOKEN_URL, headers=auth.bearer(token))
    assert renewed.status_code == 200
    assert client.get(ITEM, headers=auth.bearer(renewed.json["token"])).status_code == 200


def test_tampered_token_is_401(client, auth):
    token = auth.token()
    payload, rest = token.split(".", 1)
    forged = base64.urlsafe_b64encode(b'{"uid":2,"stamp":"x"}').decode().rstrip("=")
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), f"{forged}.{rest}", "garbage"):
        _assert_401(client.get(ITEM, headers=auth.bearer(bad)), scheme="Bearer")
        _assert_401(client.get(ITEM, headers=auth.basic(bad, "")))


def test_token_signed_with_another_key_is_401(make_app, client, auth):
    foreign = make_app(SECRET_KEY="another-secret").test_client()
    token = foreign.get(TOKEN_URL, headers=auth.basic()).json["token"]
    _assert_401(client.get(ITEM, headers=auth.bearer(token)), scheme="Bearer")


def test_expired_token_is_401(client, auth, app, monkeypatch):
    token = auth.token()
    later = TimestampSigner.get_timestamp(None) + app.config["TOKEN_EXPIRATION"] + 1
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
    _assert_401(client.get(ITEM, headers=auth.bearer(token)), scheme="Bearer")


def test_token_still_valid_just_before_expiry(client, auth, app, monkeypatch):
    token = auth.token()
    later = TimestampSigner.get_timestamp(None) + app.config["TOKEN_EXPIRATION"] - 5
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
    assert client.get(ITEM, headers=auth.bearer(token)).status_code == 200


def test_password_change_revokes_tokens(client, auth, app):
    token = auth.token()
    with app.app_context():
        user = User.by_username("alice")
        user.password = "new password"
        db.session.commit()
    _assert_401(client.get(ITEM, headers=auth.bearer(token)), scheme="Bearer")


def test_deleted_user_token_is_401(client, auth, app):
    token = auth.token()
    with app.app_context():
        db.session.delete(User.by_username("alice"))
        db.session.commit()
    _assert_401(client.get(ITEM, headers=auth.bearer(token)), scheme="Bearer")


def test_password_is_hashed_and_unreadable(app):
    with app.app_context():
        user = User.by_username("alice")
        assert "wonderland" not in user.password_hash
        assert user.password_hash.startswith("pbkdf2:sha256:")
        with pytest.raises(AttributeError):
            user.password  # noqa: B018


def test_production_hashes_with_scrypt(make_app):
    app = make_app(PASSWORD_HASH_METHOD="scrypt")
    with app.app_context():
        user = User(username="x")
        user.password = "pw"
        assert user.password_hash.startswith("scrypt:")
        assert user.verify_password("pw") and not user.verify_password("pW")


def test_unknown_user_still_costs_a_hash(client, auth, monkeypatch):
    import starter.auth

    calls = []
    real = starter.auth.check_password_hash
    monkeypatch.setattr(
        starter.auth, "check_password_hash", lambda h, p: calls.append(h) or real(h, p)
    )
    _assert_401(client.get(ITEM, headers=auth.basic("nobody", "pw")))
    assert len(calls) == 1


def test_token_use_looks_the_user_up_once_then_remembers(client, auth, sql_log):
    token = auth.token()
    with sql_log() as statements:
        for _ in range(3):
            assert client.get(ITEM, headers=auth.bearer(token)).status_code == 200
    assert sum("FROM starter_users" in s for s in statements) <= 1


def test_remembered_token_dies_with_a_password_change(client, auth, app):
    token = auth.token()
    assert client.get(ITEM, headers=auth.bearer(token)).status_code == 200
    with app.app_context():
        user = User.by_username("alice")
        user.password = "changed"
        db.session.commit()
    _assert_401(client.get(ITEM, headers=auth.bearer(token)), scheme="Bearer")
