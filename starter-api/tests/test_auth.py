"""Authentication: basic auth, tokens (as username and as Bearer), 401 bodies."""

import base64
import threading
import time

import pytest
from itsdangerous import TimestampSigner

from starter.db import db
from starter.models import User

from helpers import PASSWORD, READER, READER_PASSWORD, USERNAME, AuthActions, assert_json_error

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


@pytest.mark.parametrize("form", ["bearer", "username"])
def test_a_token_cannot_mint_a_token(client, auth, form):
    """Issue 9 item 8 (this replaced test_token_can_renew_itself): a stolen token must not
    outlive itself. A new token needs the password; the token still reads."""
    token = auth.token()
    headers = auth.bearer(token) if form == "bearer" else auth.basic(token, "")
    refused = client.get(TOKEN_URL, headers=headers)
    assert_json_error(refused, 401)
    assert "password" in refused.json["message"]
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="starter-api"'
    assert "token" not in refused.json
    assert client.get(ITEM, headers=headers).status_code == 200
    # The seed's flow: basic auth with the password gets one.
    assert client.get(TOKEN_URL, headers=auth.basic()).status_code == 200


def test_a_refused_token_renewal_is_not_a_failed_login(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_FAILED_LOGINS="2 per minute", RATELIMIT_FAILED_LOGINS_PER_ADDRESS="2 per minute")
    client = app.test_client()
    token = AuthActions(client).token()
    assert [client.get(TOKEN_URL, headers=auth.bearer(token)).status_code for _ in range(3)] == [401] * 3
    assert client.get(TOKEN_URL, headers=auth.basic(READER, READER_PASSWORD)).status_code == 200


def _forms(token):
    """Authorization header values, with the status each must get (issue 9 item 3)."""
    def b64(raw):
        return base64.b64encode(raw.encode()).decode()

    return [
        ("Basic " + b64(f"{USERNAME}:{PASSWORD}"), 200),
        ("basic " + b64(f"{USERNAME}:{PASSWORD}"), 200),  # RFC 9110: schemes are case-insensitive
        ("BASIC " + b64(f"{USERNAME}:{PASSWORD}"), 200),
        ("Basic  " + b64(f"{USERNAME}:{PASSWORD}"), 200),  # 1*SP
        (f"Bearer {token}", 200),
        (f"bearer {token}", 200),
        (f"BEARER {token}", 200),
        ("Basic " + b64(f"{token}:"), 200),  # the seed's: a token as username, empty password
        ("Basic " + b64(token), 401),  # no colon: not basic credentials (RFC 7617)
        ("Basic " + b64(f"{USERNAME}:{PASSWORD}")[:-1], 401),  # not base64
        ("Basic " + b64(f"{USERNAME}:wrong"), 401),
        ("Basic " + b64(f":{PASSWORD}"), 401),
        (f"Bearer {token} extra", 401),
        (f"Bearer {token[:-1]}", 401),
        (f"Token {token}", 401),
        (f"Basic{b64(f'{USERNAME}:{PASSWORD}')}", 401),
        ("Bearer " + b64(f"{USERNAME}:{PASSWORD}"), 401),
    ]


def test_one_table_of_credential_forms(client, auth):
    token = auth.token()
    for header, status in _forms(token):
        response = client.get(ITEM, headers={"Authorization": header})
        assert response.status_code == status, header
        if status == 401:
            assert_json_error(response, 401)


def test_password_checks_beyond_the_cap_get_503_and_others_are_served(make_seeded_app, auth, hold_hashes):
    """Issue 9 item 7: at most AUTH_PASSWORD_CHECKS hashes at once per process; the others
    are answered 503 with Retry-After at once, and remembered credentials still work."""
    app = make_seeded_app(AUTH_PASSWORD_CHECKS=1)
    client = app.test_client()
    assert client.get(ITEM, headers=auth.reader()).status_code == 200  # remembered from now on
    token = AuthActions(client).token()
    hashing, release, _ = hold_hashes()
    first = []
    worker = threading.Thread(
        target=lambda: first.append(app.test_client().get(ITEM, headers=auth.basic(USERNAME, "guess")))
    )
    worker.start()
    try:
        assert hashing.wait(10)
        for headers in (auth.basic(USERNAME, "other guess"), auth.basic("nobody", "x")):
            busy = client.get(ITEM, headers=headers)
            assert_json_error(busy, 503)
            assert int(busy.headers["Retry-After"]) >= 1
        assert client.get(ITEM, headers=auth.reader()).status_code == 200
        assert client.get(ITEM, headers=auth.bearer(token)).status_code == 200
    finally:
        release.set()
        worker.join(10)
    assert first[0].status_code == 401
    # The slot is free again.
    assert client.get(ITEM, headers=auth.basic(USERNAME, "guess")).status_code == 401


def test_identical_credentials_checked_at_once_share_one_hash(make_seeded_app, auth, password_checks, hold_hashes):
    """A burst of one client's first requests (or every client's, after a restart) waits for one
    check instead of meeting the cap (a replica test saw 503s right after a restart)."""
    app = make_seeded_app(AUTH_PASSWORD_CHECKS=1)
    hashing, release, _ = hold_hashes()
    statuses = []

    def read(headers):
        statuses.append(app.test_client().get(ITEM, headers=headers).status_code)

    leader = threading.Thread(target=read, args=(auth.basic(),))
    leader.start()
    assert hashing.wait(10)
    followers = [threading.Thread(target=read, args=(auth.basic(),)) for _ in range(4)]
    wrong = [threading.Thread(target=read, args=(auth.basic(USERNAME, "wrong"),)) for _ in range(2)]
    for thread in followers + wrong:
        thread.start()
    time.sleep(0.3)  # the followers are waiting, the wrong passwords have met the cap
    release.set()
    for thread in [leader, *followers, *wrong]:
        thread.join(10)
    assert sorted(statuses) == [200] * 5 + [503] * 2
    assert len(password_checks) == 1  # the leader's hash only: wrong ones met the cap


def test_each_app_remembers_its_own_credentials(make_seeded_app, auth, password_checks):
    first, second = make_seeded_app(), make_seeded_app()
    for app in (first, second, first, second):
        assert app.test_client().get(ITEM, headers=auth.basic()).status_code == 200
    assert len(password_checks) == 2


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
