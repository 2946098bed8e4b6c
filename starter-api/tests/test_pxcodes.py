"""The pxcodes endpoints: the seed's list, pages, items and creation."""

import pytest

from starter.db import db
from starter.models import PxCode

LIST = "/api/v1.0/pxcodes/"


def test_seed_example_first_page(client, auth):
    response = client.get(LIST, headers=auth.basic())
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.json
    assert set(body) == {"items", "meta"}
    first, second = body["items"][:2]
    assert first == {
        "procedure": "EXTRACRANIAL PROCEDURES W/O CC/MCC",
        "pxcode": "039",
        "url": "http://localhost/api/v1.0/pxcodes/039",
    }
    assert second["pxcode"] == "057"
    assert second["procedure"] == "DEGENERATIVE NERVOUS SYSTEM DISORDERS W/O MCC"
    assert len(body["items"]) == 100
    assert body["meta"] == {
        "first": "http://localhost/api/v1.0/pxcodes/?per_page=100&page=1",
        "last": "http://localhost/api/v1.0/pxcodes/?per_page=100&page=1",
        "next": None,
        "page": 1,
        "pages": 1,
        "per_page": 100,
        "prev": None,
        "total": 100,
    }


def test_items_are_ordered_by_code(client, auth):
    codes = [item["pxcode"] for item in client.get(LIST, headers=auth.basic()).json["items"]]
    assert codes == sorted(codes)
    assert codes[-1] == "948"


def test_walk_first_next_last(client, auth):
    url = LIST + "?per_page=30"
    seen = []
    pages = 0
    while url:
        body = client.get(url, headers=auth.basic()).json
        seen += [item["pxcode"] for item in body["items"]]
        pages += 1
        if body["meta"]["next"] is None:
            assert url == body["meta"]["last"] or pages == 1
        url = body["meta"]["next"]
    assert pages == 4
    assert len(seen) == len(set(seen)) == 100
    last = client.get(LIST + "?per_page=30&page=4", headers=auth.basic()).json
    assert len(last["items"]) == 10
    assert last["meta"]["prev"] == "http://localhost/api/v1.0/pxcodes/?per_page=30&page=3"
    assert last["meta"]["next"] is None
    assert last["meta"]["pages"] == 4


def test_links_keep_every_argument(client, auth):
    body = client.get(LIST + "?per_page=10&page=2&q=&sort=pxcode", headers=auth.basic()).json
    meta = body["meta"]
    assert meta["next"] == (
        "http://localhost/api/v1.0/pxcodes/?q=&sort=pxcode&per_page=10&page=3"
    )
    assert meta["prev"].endswith("?q=&sort=pxcode&per_page=10&page=1")
    assert meta["first"].startswith("http://localhost/")
    assert meta["last"].endswith("&page=10")


def test_links_use_the_request_host(client, auth):
    body = client.get(
        LIST, headers=auth.basic(), base_url="https://codes.example.org"
    ).json
    assert body["items"][0]["url"] == "https://codes.example.org/api/v1.0/pxcodes/039"
    assert body["meta"]["first"].startswith("https://codes.example.org/api/v1.0/pxcodes/?")


@pytest.mark.parametrize(("per_page", "expected"), [("1", 1), ("100", 100), ("101", 100), ("5000", 100)])
def test_per_page_is_clamped_to_100(client, auth, per_page, expected):
    body = client.get(f"{LIST}?per_page={per_page}", headers=auth.basic()).json
    assert body["meta"]["per_page"] == expected
    assert len(body["items"]) == expected


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
        ("page=", "page"),
        ("per_page=0", "per_page"),
        ("per_page=-5", "per_page"),
        ("per_page=ten", "per_page"),
    ],
)
def test_bad_page_arguments_are_400_naming_the_parameter(client, auth, query, parameter):
    response = client.get(f"{LIST}?{query}", headers=auth.basic())
    assert response.status_code == 400
    assert response.json["status"] == 400
    assert response.json["error"] == "Bad Request"
    assert response.json["message"].startswith(f"{parameter} must be")


@pytest.mark.parametrize("page", ["2", "11", "99999999999999999999999"])
def test_page_past_the_last_is_404(client, auth, page):
    response = client.get(f"{LIST}?page={page}", headers=auth.basic())
    assert response.status_code == 404
    assert response.json["status"] == 404
    assert "past the last page (1)" in response.json["message"]


def test_empty_collection_has_one_empty_page(empty_app):
    from starter.models import User

    with empty_app.app_context():
        user = User(username="bob")
        user.password = "pw"
        db.session.add(user)
        db.session.commit()
    response = empty_app.test_client().get(LIST, auth=("bob", "pw"))
    assert response.status_code == 200
    assert response.json["items"] == []
    assert response.json["meta"]["total"] == 0
    assert response.json["meta"]["last"].endswith("page=1")


def test_get_item(client, auth):
    response = client.get(LIST + "039", headers=auth.basic())
    assert response.status_code == 200
    assert response.json == {
        "procedure": "EXTRACRANIAL PROCEDURES W/O CC/MCC",
        "pxcode": "039",
        "url": "http://localhost/api/v1.0/pxcodes/039",
    }


@pytest.mark.parametrize("code", ["000", "39", "0390", "nope"])
def test_unknown_item_is_404_json(client, auth, code):
    response = client.get(LIST + code, headers=auth.basic())
    assert response.status_code == 404
    assert response.json == {
        "status": 404,
        "error": "Not Found",
        "message": f"pxcode '{code}' not found",
    }


def test_create(client, auth, app):
    payload = {"pxcode": "0016070", "procedure": "BYPASS CEREBRAL VENTRICLE TO NASOPHARYNX"}
    response = client.post(LIST, json=payload, headers=auth.basic())
    assert response.status_code == 201
    assert response.headers["Location"] == "http://localhost/api/v1.0/pxcodes/0016070"
    assert response.json == {**payload, "url": response.headers["Location"]}
    assert response.headers["ETag"]
    fetched = client.get(response.headers["Location"], headers=auth.basic())
    assert fetched.json == response.json
    assert fetched.headers["ETag"] == response.headers["ETag"]
    assert client.get(LIST, headers=auth.basic()).json["meta"]["total"] == 101


def test_create_existing_code_is_409(client, auth, app):
    payload = {"pxcode": "039", "procedure": "SOMETHING ELSE"}
    response = client.post(LIST, json=payload, headers=auth.basic())
    assert response.status_code == 409
    assert response.json["message"] == "pxcode '039' already exists"
    with app.app_context():
        assert db.session.get(PxCode, 1) is not None
        assert PxCode.get_or_404("039").procedure == "EXTRACRANIAL PROCEDURES W/O CC/MCC"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "pxcode"),
        ({"procedure": "X"}, "pxcode"),
        ({"pxcode": "123"}, "procedure"),
        ({"pxcode": 123, "procedure": "X"}, "pxcode"),
        ({"pxcode": "123", "procedure": None}, "procedure"),
        ({"pxcode": "123", "procedure": "   "}, "procedure"),
        ({"pxcode": "", "procedure": "X"}, "pxcode"),
        ({"pxcode": "12345678901", "procedure": "X"}, "pxcode"),
        ({"pxcode": "a/b", "procedure": "X"}, "pxcode"),
        ({"pxcode": "-12", "procedure": "X"}, "pxcode"),
        ({"pxcode": "123", "procedure": "X" * 256}, "procedure"),
        ({"pxcode": "123", "procedure": "X", "extra": 1}, "extra"),
    ],
)
def test_create_rejects_invalid_fields(client, auth, payload, field):
    response = client.post(LIST, json=payload, headers=auth.basic())
    assert response.status_code == 400
    assert f"{field}:" in response.json["message"]
    assert client.get(LIST, headers=auth.basic()).json["meta"]["total"] == 100


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ('"039"', "application/json", 400),
        ("", "application/json", 400),
        ("[" * 100_000 + "]" * 100_000, "application/json", 413),
        ("[" * 5_000 + "]" * 5_000, "application/json", 400),
        ("pxcode=1&procedure=x", "application/x-www-form-urlencoded", 415),
        ('{"pxcode": "1", "procedure": "x"}', "text/plain", 415),
    ],
)
def test_create_rejects_bodies_that_are_not_a_json_object(client, auth, data, content_type, status):
    response = client.post(LIST, data=data, content_type=content_type, headers=auth.basic())
    assert response.status_code == status
    assert response.json["status"] == status


def test_create_strips_surrounding_spaces_from_the_title(client, auth):
    response = client.post(
        LIST, json={"pxcode": "A1", "procedure": "  SPACED  "}, headers=auth.basic()
    )
    assert response.json["procedure"] == "SPACED"
