"""Bad input: a table of hostile or broken requests, each with its exact 4xx and a JSON error.

Every case runs against SQLite and PostgreSQL (the ``app`` fixture). Every answer
must be the expected status with the API's error body ``{"status", "error",
"message"}`` as JSON: never a 500, never a traceback, never HTML.
"""

import base64
import json
from dataclasses import dataclass, field

import pytest
from helpers import assert_json_error
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import text

from starter.auth import TOKEN_SALT
from starter.db import db, recreate_tables
from starter.models import User

LIST = "/api/v1.0/pxcodes/"
ITEM = "/api/v1.0/pxcodes/039"
ADMIN, ADMIN_PASSWORD = "root-admin", "root-password"
READER, READER_PASSWORD = "plain-reader", "reader-password"


# --- the table ---

@dataclass
class Case:
    id: str
    method: str
    path: str
    status: int
    who: str = "user"  # user (conftest's alice), admin, reader (not an admin), none, or raw (headers)
    headers: dict = field(default_factory=dict)
    json_body: object = None  # serialized with json.dumps, Content-Type application/json
    data: bytes = None  # sent as is
    content_type: str = None


def _basic(raw):
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _nested(depth):
    return ("[" * depth + "]" * depth).encode()


VALID = {"pxcode": "X100", "procedure": "A VALID TITLE"}
LONG = "9" * 10_000

CASES = [
    # page / per_page: non-integer, zero, negative, huge, empty, NUL, floats
    Case("page-word", "GET", LIST + "?page=abc", 400),
    Case("page-zero", "GET", LIST + "?page=0", 400),
    Case("page-negative", "GET", LIST + "?page=-1", 400),
    Case("page-float", "GET", LIST + "?page=1.5", 400),
    Case("page-exponent", "GET", LIST + "?page=1e3", 400),
    Case("page-empty", "GET", LIST + "?page=", 400),
    Case("page-nul", "GET", LIST + "?page=%00", 400),
    Case("page-huge", "GET", LIST + "?page=" + "9" * 40, 404),
    Case("page-past-last", "GET", LIST + "?page=2", 404),
    Case("per-page-word", "GET", LIST + "?per_page=ten", 400),
    Case("per-page-zero", "GET", LIST + "?per_page=0", 400),
    Case("per-page-negative", "GET", LIST + "?per_page=-100", 400),
    Case("per-page-huge-negative", "GET", LIST + "?per_page=-" + "9" * 40, 400),
    Case("page-sql", "GET", LIST + "?page=1%20OR%201=1", 400),
    # unknown or bad query arguments
    Case("unknown-arg", "GET", LIST + "?bogus=1", 400),
    Case("unknown-arg-case", "GET", LIST + "?PAGE=1", 400),
    Case("unknown-arg-sql", "GET", LIST + "?1%3D1--=1", 400),
    Case("sort-unknown", "GET", LIST + "?sort=password_hash", 400),
    Case("sort-sql", "GET", LIST + "?sort=pxcode%3B%20DROP%20TABLE%20starter_pxcodes", 400),
    Case("q-nul", "GET", LIST + "?q=a%00b", 400),
    Case("code-arg-nul", "GET", LIST + "?code=0%00", 400),
    # hostile codes in the path
    Case("code-10000-chars", "GET", "/api/v1.0/pxcodes/" + LONG, 404),
    Case("code-slash", "GET", "/api/v1.0/pxcodes/03/9", 404),
    Case("code-encoded-slash", "GET", "/api/v1.0/pxcodes/03%2F9", 404),
    Case("code-nul", "GET", "/api/v1.0/pxcodes/039%00", 404),
    Case("code-percent", "GET", "/api/v1.0/pxcodes/%25", 404),
    Case("code-bad-escape", "GET", "/api/v1.0/pxcodes/%zz", 404),
    Case("code-quotes", "GET", "/api/v1.0/pxcodes/%27039%22", 404),
    Case("code-unicode", "GET", "/api/v1.0/pxcodes/%CE%A9039%F0%9F%98%80", 404),
    Case("code-invalid-utf8", "GET", "/api/v1.0/pxcodes/%ED%A0%80%FF", 404),
    Case("code-sql-or", "GET", "/api/v1.0/pxcodes/039'%20OR%20'1'='1", 404),
    Case("code-sql-drop", "GET", "/api/v1.0/pxcodes/039;DROP%20TABLE%20starter_pxcodes;--", 404),
    Case("code-dot-dot", "GET", "/api/v1.0/pxcodes/..%2F..%2Fetc%2Fpasswd", 404),
    Case("unknown-path", "GET", "/api/v1.0/nothing-here", 404),
    # request bodies: malformed, empty, not an object, deeply nested
    Case("json-malformed", "POST", LIST, 400, "admin", data=b'{"pxcode": ', content_type="application/json"),
    Case("json-empty", "POST", LIST, 400, "admin", data=b"", content_type="application/json"),
    Case("json-array", "POST", LIST, 400, "admin", json_body=[VALID]),
    Case("json-string", "POST", LIST, 400, "admin", json_body="X100"),
    Case("json-number", "POST", LIST, 400, "admin", json_body=12),
    Case("json-null", "POST", LIST, 400, "admin", json_body=None, data=b"null",
         content_type="application/json"),
    Case("json-nested-deep", "POST", LIST, 400, "admin", data=_nested(30_000),
         content_type="application/json"),
    Case("json-nested-objects", "POST", LIST, 400, "admin",
         data=(b'{"a":' * 10_000) + b"1" + (b"}" * 10_000), content_type="application/json"),
    Case("json-invalid-utf8", "POST", LIST, 400, "admin",
         data=b'{"pxcode": "X\xff\xfe", "procedure": "T"}', content_type="application/json"),
    Case("json-nan", "POST", LIST, 400, "admin", data=b'{"pxcode": "X1", "procedure": NaN}',
         content_type="application/json"),
    # wrong types, empty and too long fields
    Case("pxcode-int", "POST", LIST, 400, "admin", json_body={"pxcode": 12, "procedure": "T"}),
    Case("pxcode-null", "POST", LIST, 400, "admin", json_body={"pxcode": None, "procedure": "T"}),
    Case("pxcode-list", "POST", LIST, 400, "admin", json_body={"pxcode": ["039"], "procedure": "T"}),
    Case("pxcode-missing", "POST", LIST, 400, "admin", json_body={"procedure": "T"}),
    Case("procedure-null", "POST", LIST, 400, "admin", json_body={"pxcode": "X1", "procedure": None}),
    Case("procedure-object", "POST", LIST, 400, "admin", json_body={"pxcode": "X1", "procedure": {"a": 1}}),
    Case("procedure-bool", "POST", LIST, 400, "admin", json_body={"pxcode": "X1", "procedure": True}),
    Case("pxcode-empty", "POST", LIST, 400, "admin", json_body={"pxcode": "", "procedure": "T"}),
    Case("procedure-empty", "POST", LIST, 400, "admin", json_body={"pxcode": "X1", "procedure": ""}),
    Case("procedure-blank", "POST", LIST, 400, "admin", json_body={"pxcode": "X1", "procedure": " \t\n"}),
    Case("pxcode-11-chars", "POST", LIST, 400, "admin", json_body={"pxcode": "A" * 11, "procedure": "T"}),
    Case("pxcode-10000-chars", "POST", LIST, 400, "admin", json_body={"pxcode": LONG, "procedure": "T"}),
    Case("procedure-256-chars", "POST", LIST, 400, "admin", json_body={"pxcode": "X1", "procedure": "T" * 256}),
    Case("pxcode-slash", "POST", LIST, 400, "admin", json_body={"pxcode": "A/B", "procedure": "T"}),
    Case("pxcode-nul", "POST", LIST, 400, "admin", json_body={"pxcode": "A\x00", "procedure": "T"}),
    Case("pxcode-percent", "POST", LIST, 400, "admin", json_body={"pxcode": "A%25", "procedure": "T"}),
    Case("pxcode-quote", "POST", LIST, 400, "admin", json_body={"pxcode": "A'1\"", "procedure": "T"}),
    Case("pxcode-unicode", "POST", LIST, 400, "admin", json_body={"pxcode": "Ω12", "procedure": "T"}),
    Case("pxcode-unicode-digits", "POST", LIST, 400, "admin", json_body={"pxcode": "١٢٣", "procedure": "T"}),
    Case("pxcode-sql", "POST", LIST, 400, "admin",
         json_body={"pxcode": "1';DROP", "procedure": "T"}),
    Case("pxcode-leading-dash", "POST", LIST, 400, "admin", json_body={"pxcode": "-1", "procedure": "T"}),
    Case("pxcode-newline", "POST", LIST, 400, "admin", json_body={"pxcode": "A1\n", "procedure": "T"}),
    Case("procedure-nul", "POST", LIST, 400, "admin", json_body={"pxcode": "X1", "procedure": "A\x00B"}),
    Case("procedure-lone-surrogate", "POST", LIST, 400, "admin",
         data=b'{"pxcode": "X1", "procedure": "A\\ud800B"}', content_type="application/json"),
    Case("unknown-field", "POST", LIST, 400, "admin", json_body={**VALID, "is_admin": True}),
    Case("existing-code", "POST", LIST, 409, "admin", json_body={"pxcode": "039", "procedure": "T"}),
    # size and media type
    Case("body-too-large", "POST", LIST, 413, "admin",
         json_body={"pxcode": "X1", "procedure": "T" * 70_000}),
    Case("content-type-text", "POST", LIST, 415, "admin", data=json.dumps(VALID).encode(),
         content_type="text/plain"),
    Case("content-type-form", "POST", LIST, 415, "admin", data=b"pxcode=X1&procedure=T",
         content_type="application/x-www-form-urlencoded"),
    Case("content-type-missing", "POST", LIST, 415, "admin", data=json.dumps(VALID).encode()),
    Case("content-type-xml", "POST", LIST, 415, "admin", data=b"<pxcode>X1</pxcode>",
         content_type="application/xml"),
    # methods not allowed
    Case("delete-list", "DELETE", LIST, 405),
    Case("put-list", "PUT", LIST, 405),
    Case("patch-list", "PATCH", LIST, 405),
    Case("post-item", "POST", ITEM, 405, "admin", json_body=VALID),
    Case("trace-item", "TRACE", ITEM, 405),
    Case("post-healthz", "POST", "/healthz", 405, "none"),
    Case("post-request-token", "POST", "/auth/request-token", 405),
    Case("delete-readyz", "DELETE", "/readyz", 405, "none"),
    # Authorization: missing, malformed, wrong
    Case("auth-missing", "GET", LIST, 401, "none"),
    Case("auth-empty", "GET", LIST, 401, "raw", headers={"Authorization": ""}),
    Case("auth-basic-no-credentials", "GET", LIST, 401, "raw", headers={"Authorization": "Basic"}),
    Case("auth-basic-bad-base64", "GET", LIST, 401, "raw", headers={"Authorization": "Basic !!!not*base64"}),
    Case("auth-basic-no-colon", "GET", LIST, 401, "raw", headers=_basic(b"alicewonderland")),
    Case("auth-basic-non-utf8", "GET", LIST, 401, "raw", headers=_basic(b"\xff\xfe:\xfa\xfb")),
    Case("auth-basic-nul", "GET", LIST, 401, "raw", headers=_basic(b"alice\x00:wonderland")),
    Case("auth-basic-huge", "GET", LIST, 401, "raw", headers=_basic(b"a" * 20_000 + b":" + b"b" * 20_000)),
    Case("auth-basic-empty-pair", "GET", LIST, 401, "raw", headers=_basic(b":")),
    Case("auth-wrong-password", "GET", LIST, 401, "raw", headers=_basic(b"alice:wrong")),
    Case("auth-unknown-user", "GET", LIST, 401, "raw", headers=_basic(b"mallory:wonderland")),
    Case("auth-sql-user", "GET", LIST, 401, "raw", headers=_basic(b"' OR '1'='1:' OR '1'='1")),
    Case("auth-unknown-scheme", "GET", LIST, 401, "raw", headers={"Authorization": "Digest username=alice"}),
    Case("auth-bearer-empty", "GET", LIST, 401, "raw", headers={"Authorization": "Bearer"}),
    Case("auth-bearer-garbage", "GET", LIST, 401, "raw", headers={"Authorization": "Bearer x.y.z"}),
    Case("auth-bearer-huge", "GET", LIST, 401, "raw", headers={"Authorization": "Bearer " + "A" * 30_000}),
    # conditional headers on reads
    Case("if-match-garbage", "GET", ITEM, 412, headers={"If-Match": "garbage"}),
    Case("if-match-weak", "GET", ITEM, 412, headers={"If-Match": 'W/"{etag}"'}),
    Case("if-match-other-tag", "GET", ITEM, 412, headers={"If-Match": '"0000", "1111"'}),
    # admin-only writes
    Case("post-not-admin", "POST", LIST, 403, "reader", json_body=VALID),
    Case("put-not-admin", "PUT", ITEM, 403, "reader", json_body={"procedure": "T"}, headers={"If-Match": '"{etag}"'}),
    Case("patch-not-admin", "PATCH", ITEM, 403, "reader", json_body={"procedure": "T"}, headers={"If-Match": '"{etag}"'}),
    Case("delete-not-admin", "DELETE", ITEM, 403, "reader", headers={"If-Match": '"{etag}"'}),
    # writes need the current ETag
    Case("put-no-if-match", "PUT", ITEM, 428, "admin", json_body={"procedure": "T"}),
    Case("patch-no-if-match", "PATCH", ITEM, 428, "admin", json_body={"procedure": "T"}),
    Case("delete-no-if-match", "DELETE", ITEM, 428, "admin"),
    Case("put-stale-if-match", "PUT", ITEM, 412, "admin", json_body={"procedure": "T"},
         headers={"If-Match": '"0123456789abcdef0123456789abcdef"'}),
    Case("patch-garbage-if-match", "PATCH", ITEM, 412, "admin", json_body={"procedure": "T"},
         headers={"If-Match": "garbage"}),
    Case("delete-weak-if-match", "DELETE", ITEM, 412, "admin", headers={"If-Match": 'W/"{etag}"'}),
    Case("put-other-pxcode", "PUT", ITEM, 400, "admin", json_body={"pxcode": "040", "procedure": "T"},
         headers={"If-Match": '"{etag}"'}),
    Case("put-procedure-null", "PUT", ITEM, 400, "admin", json_body={"procedure": None},
         headers={"If-Match": '"{etag}"'}),
    Case("put-procedure-missing", "PUT", ITEM, 400, "admin", json_body={},
         headers={"If-Match": '"{etag}"'}),
    Case("patch-procedure-256", "PATCH", ITEM, 400, "admin", json_body={"procedure": "T" * 256},
         headers={"If-Match": '"{etag}"'}),
    Case("patch-unknown-field", "PATCH", ITEM, 400, "admin", json_body={"owner": "me"},
         headers={"If-Match": '"{etag}"'}),
    Case("patch-not-object", "PATCH", ITEM, 400, "admin", json_body=["procedure"],
         headers={"If-Match": '"{etag}"'}),
    Case("put-form", "PUT", ITEM, 415, "admin", data=b"procedure=T",
         content_type="application/x-www-form-urlencoded", headers={"If-Match": '"{etag}"'}),
    Case("put-missing-code", "PUT", "/api/v1.0/pxcodes/NOPE", 404, "admin", json_body={"procedure": "T"},
         headers={"If-Match": '"{etag}"'}),
    Case("delete-missing-code", "DELETE", "/api/v1.0/pxcodes/NOPE", 404, "admin",
         headers={"If-Match": '"{etag}"'}),
]


@pytest.fixture
def admin_user(app):
    """An admin and a plain (non-admin) user of this test's own, whatever conftest's alice is."""
    with app.app_context():
        for name, password, is_admin in ((ADMIN, ADMIN_PASSWORD, True), (READER, READER_PASSWORD, False)):
            user = User(username=name, is_admin=is_admin)
            user.password = password
            db.session.add(user)
        db.session.commit()
    return ADMIN, ADMIN_PASSWORD


def send(client, auth, admin, case, etag):
    headers = {k: v.replace("{etag}", etag) for k, v in case.headers.items()}
    if case.who == "user":
        headers.update(auth.basic())
    elif case.who == "admin":
        headers.update(auth.basic(*admin))
    elif case.who == "reader":
        headers.update(auth.basic(READER, READER_PASSWORD))
    kwargs = {"headers": headers}
    if case.json_body is not None:
        kwargs["data"] = json.dumps(case.json_body)
        kwargs["content_type"] = "application/json"
    if case.data is not None:
        kwargs["data"] = case.data
        if case.content_type:
            kwargs["content_type"] = case.content_type
    return client.open(case.path, method=case.method, **kwargs)


@pytest.mark.parametrize(
    "database_url, case",
    [
        pytest.param(backend, c, id=f"{backend}-{c.id}")
        for backend in ("sqlite", "postgresql")
        for c in CASES
    ],
    indirect=["database_url"],
)
def test_bad_request_gets_exact_4xx_json(client, auth, admin_user, case):
    etag = client.get(ITEM, headers=auth.basic()).headers["ETag"].strip('"')
    response = send(client, auth, admin_user, case, etag)
    assert_json_error(response, case.status)
    if case.status == 401:
        assert "WWW-Authenticate" in response.headers
    if case.status == 405:
        assert "Allow" in response.headers
    # Nothing was written by a refused request.
    after = client.get(LIST + "?per_page=100", headers=auth.basic()).get_json()
    assert after["meta"]["total"] == 100
    assert client.get(ITEM, headers=auth.basic()).headers["ETag"].strip('"') == etag


def test_the_table_is_big_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


# --- tokens: expired, tampered, foreign, revoked ---

def _token_cases(app, auth):
    good = auth.token()
    with app.app_context():
        uid = User.by_username("alice").id
        stamp = User.by_username("alice").credential_stamp
    foreign = URLSafeTimedSerializer("another-secret", salt=TOKEN_SALT).dumps({"uid": uid, "stamp": stamp})
    other_salt = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="other").dumps({"uid": uid, "stamp": stamp})
    forged_uid = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=TOKEN_SALT).dumps(
        {"uid": "1 OR 1=1", "stamp": stamp})
    no_claims = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=TOKEN_SALT).dumps(["x"])
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    payload_swapped = good.split(".")[0][::-1] + "." + ".".join(good.split(".")[1:])
    return {
        "tampered-signature": tampered,
        "tampered-payload": payload_swapped,
        "foreign-key": foreign,
        "other-salt": other_salt,
        "forged-uid": forged_uid,
        "claims-not-object": no_claims,
        "truncated": good[: len(good) // 2],
    }


@pytest.mark.parametrize("kind", ["tampered-signature", "tampered-payload", "foreign-key", "other-salt",
                                  "forged-uid", "claims-not-object", "truncated"])
@pytest.mark.parametrize("how", ["bearer", "basic"])
def test_bad_token_is_401_json(app, client, auth, kind, how):
    token = _token_cases(app, auth)[kind]
    headers = auth.bearer(token) if how == "bearer" else _basic(f"{token}:".encode())
    response = client.get(LIST, headers=headers)
    assert_json_error(response, 401)


def test_expired_token_is_401_json(app, client, auth):
    token = auth.token()
    assert client.get(LIST, headers=auth.bearer(token)).status_code == 200
    app.config["TOKEN_EXPIRATION"] = -1  # every token is now older than its lifetime
    assert_json_error(client.get(LIST, headers=auth.bearer(token)), 401)
    assert_json_error(client.get(LIST, headers=_basic(f"{token}:".encode())), 401)


def test_token_of_changed_password_is_401_json(app, client, auth):
    token = auth.token()
    with app.app_context():
        user = User.by_username("alice")
        user.password = "a new password"
        db.session.commit()
    assert_json_error(client.get(LIST, headers=auth.bearer(token)), 401)


# --- hostile but legal: tolerated with a normal answer, never a 500 ---

@pytest.mark.parametrize(
    "path, headers, status",
    [
        (LIST + "?per_page=" + "9" * 40, {}, 200),  # clamped to the maximum
        (ITEM, {"If-None-Match": "garbage"}, 200),  # matches nothing
        (ITEM, {"If-None-Match": '"unterminated'}, 200),
        (ITEM, {"If-None-Match": ", , ,"}, 200),
        (ITEM, {"If-None-Match": "*"}, 304),
        (ITEM, {"If-None-Match": 'W/"{etag}"'}, 304),  # weak comparison
        (ITEM, {"If-Match": "*"}, 200),
        (ITEM, {"If-Match": '"x", "{etag}"'}, 200),
    ],
    ids=["per-page-huge", "inm-garbage", "inm-unterminated", "inm-commas", "inm-star", "inm-weak",
         "im-star", "im-list"],
)
def test_hostile_but_legal_reads(client, auth, path, headers, status):
    etag = client.get(ITEM, headers=auth.basic()).headers["ETag"].strip('"')
    headers = {k: v.replace("{etag}", etag) for k, v in headers.items()}
    response = client.get(path, headers={**headers, **auth.basic()})
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    if status == 200 and "per_page" in path:
        assert response.get_json()["meta"]["per_page"] == 100


# --- rate limits (the lead's flask-limiter) ---

def test_rate_limit_is_429_json_with_retry_after(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="3 per minute",
                   RATELIMIT_PER_USER="3 per minute", RATELIMIT_PER_ADDRESS="3 per minute",
                   RATELIMIT_STORAGE_URI="memory://")
    with app.app_context():
        recreate_tables()
        user = User(username="alice")
        user.password = "wonderland"
        db.session.add(user)
        db.session.commit()
    client = app.test_client()
    statuses = []
    for _ in range(10):
        response = client.get(LIST, auth=("alice", "wonderland"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert_json_error(response, 429)
    assert int(response.headers["Retry-After"]) >= 1
    assert any(h.lower().startswith("x-ratelimit-") for h in response.headers.keys())


# --- the CLI: bad files and bad rows name the line and write nothing ---

INSERT = "INSERT INTO starter_pxcodes (pxcode, procedure) VALUES "


@dataclass
class FileCase:
    id: str
    content: bytes
    line: int  # the line the message must name


def _sql(*rows):
    return "".join(f"{INSERT}{row};\n" for row in rows).encode()


LOADDATA_CASES = [
    FileCase("syntax-error", _sql("('A1', 'ONE')", "('A2', 'TWO')") + f"{INSERT}('B1', 'X' ;\n".encode(), 3),
    FileCase("null-procedure", _sql("('A1', 'ONE')", "('A2', NULL)"), 2),
    FileCase("duplicate-code", _sql("('A1', 'ONE')", "('A2', 'TWO')", "('A1', 'AGAIN')"), 3),
    FileCase("unknown-column", _sql("('A1', 'ONE')") + b"INSERT INTO starter_pxcodes (pxcode, title) VALUES ('A2', 'T');\n", 2),
    FileCase("not-utf8", _sql("('A1', 'ONE')") + f"{INSERT}('A2', 'CAF".encode() + b"\xe9');\n", 2),
    FileCase("code-too-long", _sql("('A1', 'ONE')", "('ABCDEFGHIJK', 'TWO')"), 2),
    FileCase("title-too-long", _sql("('A1', 'ONE')", "('A2', '" + "T" * 256 + "')"), 2),
    FileCase("empty-code", _sql("('A1', 'ONE')", "('', 'TWO')"), 2),
    FileCase("code-with-space", _sql("('A1', 'ONE')", "('BAD CODE', 'TWO')"), 2),
    FileCase("blank-title", _sql("('A1', 'ONE')", "('A2', '   ')"), 2),
]


def _count(app):
    with app.app_context():
        return db.session.scalar(text("SELECT count(*) FROM starter_pxcodes"))


def _one_line_error(result):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "database_url, case",
    [pytest.param(b, c, id=f"{b}-{c.id}") for b in ("sqlite", "postgresql") for c in LOADDATA_CASES],
    indirect=["database_url"],
)
def test_loaddata_bad_file_writes_nothing(empty_app, tmp_path, case):
    path = tmp_path / "bad.sql"
    path.write_bytes(case.content)
    result = empty_app.test_cli_runner().invoke(args=["loaddata", str(path)])
    _one_line_error(result)
    assert _count(empty_app) == 0


@pytest.mark.parametrize(
    "database_url, case",
    [pytest.param(b, c, id=f"{b}-{c.id}") for b in ("sqlite", "postgresql") for c in LOADDATA_CASES],
    indirect=["database_url"],
)
def test_loaddata_error_names_the_line(empty_app, tmp_path, case):
    path = tmp_path / "bad.sql"
    path.write_bytes(case.content)
    message = _one_line_error(empty_app.test_cli_runner().invoke(args=["loaddata", str(path)]))
    assert f"line {case.line}" in message, message


IMPORT_CASES = [
    ("bad-code", b"039\tOK\nBAD CODE\tX\n", 2),
    ("empty-title", b"039\tOK\n040\tFINE\n041\t\n", 3),
    ("title-too-long", b"039\tOK\n040\t" + b"T" * 256 + b"\n", 2),
    ("code-too-long", b"039\tOK\nABCDEFGHIJK\tX\n", 2),
    ("not-utf8", b"039\tOK\n040\tCAF\xe9\n", 2),
    ("nul", b"039\tOK\n040\tA\x00B\n", 2),
    ("control-char", b"039\tOK\n040\tA\x1bB\n", 2),
    ("too-many-columns", b"039\tOK\tEXTRA\n", 1),
    ("duplicate-code", b"039\tOK\n040\tX\n039\tAGAIN\n", 3),
]


@pytest.mark.parametrize("name, content, line", IMPORT_CASES, ids=[c[0] for c in IMPORT_CASES])
def test_import_bad_row_names_the_line_and_writes_nothing(empty_app, tmp_path, name, content, line):
    path = tmp_path / "codes.tsv"
    path.write_bytes(content)
    result = empty_app.test_cli_runner().invoke(args=["import-pxcodes", str(path)])
    message = _one_line_error(result)
    assert f"line {line}" in message, message
    assert _count(empty_app) == 0
