"""Admin writes: PUT, PATCH and DELETE need If-Match (428/412); readers get 403."""

import threading

import pytest

from starter.db import db
from starter.models import PxCode

LIST = "/api/v1.0/pxcodes/"
ITEM = LIST + "039"


def _etag(client, auth, url=ITEM):
    return client.get(url, headers=auth.basic()).headers["ETag"]


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", LIST, {"pxcode": "X1", "procedure": "NEW"}),
        ("PUT", ITEM, {"procedure": "NEW"}),
        ("PATCH", ITEM, {"procedure": "NEW"}),
        ("DELETE", ITEM, None),
    ],
)
def test_readers_cannot_write(client, auth, method, url, body):
    headers = {**auth.reader(), "If-Match": _etag(client, auth)}
    response = client.open(url, method=method, json=body, headers=headers)
    assert response.status_code == 403
    assert response.json == {
        "status": 403,
        "error": "Forbidden",
        "message": "this request needs an admin user",
    }
    assert client.get(ITEM, headers=auth.reader()).json["procedure"] == (
        "EXTRACRANIAL PROCEDURES W/O CC/MCC"
    )


def test_readers_can_read(client, auth):
    assert client.get(LIST, headers=auth.reader()).status_code == 200
    assert client.get(ITEM, headers=auth.reader()).status_code == 200


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_with_current_etag(client, auth, method):
    before = _etag(client, auth)
    response = client.open(
        ITEM, method=method, json={"procedure": "  RENAMED  "}, headers={**auth.basic(), "If-Match": before}
    )
    assert response.status_code == 200
    assert response.json == {
        "pxcode": "039",
        "procedure": "RENAMED",
        "url": "http://localhost/api/v1.0/pxcodes/039",
    }
    assert response.headers["ETag"] != before
    assert response.headers["ETag"] == _etag(client, auth)
    assert client.get(ITEM, headers=auth.basic()).json["procedure"] == "RENAMED"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_write_without_if_match_is_428(client, auth, method):
    response = client.open(ITEM, method=method, json={"procedure": "X"}, headers=auth.basic())
    assert response.status_code == 428
    assert response.json["error"] == "Precondition Required"
    assert client.get(ITEM, headers=auth.basic()).json["procedure"].startswith("EXTRACRANIAL")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("if_match", ['"stale"', "W/{etag}", "garbage", ""])
def test_write_with_stale_etag_is_412(client, auth, method, if_match):
    header = if_match.format(etag=_etag(client, auth))
    response = client.open(
        ITEM, method=method, json={"procedure": "X"}, headers={**auth.basic(), "If-Match": header}
    )
    assert response.status_code == 412
    assert response.json["status"] == 412
    assert client.get(ITEM, headers=auth.basic()).json["procedure"].startswith("EXTRACRANIAL")


def test_if_match_star_allows_the_write(client, auth):
    response = client.put(ITEM, json={"procedure": "ANY"}, headers={**auth.basic(), "If-Match": "*"})
    assert response.status_code == 200


def test_two_editors_cannot_overwrite_each_other(client, auth):
    tag = _etag(client, auth)
    first = client.put(ITEM, json={"procedure": "FIRST"}, headers={**auth.basic(), "If-Match": tag})
    second = client.put(ITEM, json={"procedure": "SECOND"}, headers={**auth.basic(), "If-Match": tag})
    assert (first.status_code, second.status_code) == (200, 412)
    assert client.get(ITEM, headers=auth.basic()).json["procedure"] == "FIRST"


def test_write_checks_the_row_it_changes(app, client, auth):
    """The If-Match check and the write are one statement: a change in between is a 412."""
    tag = _etag(client, auth)
    gate = threading.Event()
    from sqlalchemy import event

    @event.listens_for(db.session, "do_orm_execute")
    def change_row_before_the_write(state):
        if state.is_update and not gate.is_set():
            gate.set()
            with db.engine.begin() as other:
                other.exec_driver_sql(
                    "UPDATE starter_pxcodes SET procedure = 'SNEAKED IN' WHERE pxcode = '039'"
                )

    try:
        with app.app_context():
            response = client.put(ITEM, json={"procedure": "MINE"}, headers={**auth.basic(), "If-Match": tag})
    finally:
        event.remove(db.session, "do_orm_execute", change_row_before_the_write)
    assert gate.is_set()
    assert response.status_code == 412
    assert client.get(ITEM, headers=auth.basic()).json["procedure"] == "SNEAKED IN"


def test_delete(client, auth, app):
    response = client.delete(ITEM, headers={**auth.basic(), "If-Match": _etag(client, auth)})
    assert response.status_code == 204
    assert response.data == b""
    assert client.get(ITEM, headers=auth.basic()).status_code == 404
    assert client.get(LIST, headers=auth.basic()).json["meta"]["total"] == 99


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_write_to_missing_item_is_404(client, auth, method):
    response = client.open(LIST + "000", method=method, json={"procedure": "X"}, headers={**auth.basic(), "If-Match": "*"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("method", "body", "message"),
    [
        ("PUT", {}, "procedure: required"),
        ("PUT", {"pxcode": "039"}, "procedure: required"),
        ("PUT", {"procedure": ""}, "procedure: required"),
        ("PUT", {"procedure": "X", "pxcode": "040"}, "pxcode: cannot change"),
        ("PUT", {"procedure": "X", "extra": True}, "extra: unknown field"),
        ("PATCH", {}, "nothing to change"),
        ("PATCH", {"procedure": None}, "procedure: required"),
        ("PATCH", {"procedure": "A\u0000B"}, "without control characters"),
        ("PATCH", {"procedure": "X" * 256}, "at most 255"),
    ],
)
def test_bad_update_bodies_are_400(client, auth, method, body, message):
    response = client.open(ITEM, method=method, json=body, headers={**auth.basic(), "If-Match": _etag(client, auth)})
    assert response.status_code == 400
    assert message in response.json["message"]
    assert client.get(ITEM, headers=auth.basic()).json["procedure"].startswith("EXTRACRANIAL")


def test_patch_with_only_the_same_code_changes_nothing(client, auth):
    tag = _etag(client, auth)
    response = client.patch(ITEM, json={"pxcode": "039"}, headers={**auth.basic(), "If-Match": tag})
    assert response.status_code == 200
    assert response.headers["ETag"] == tag


def test_update_makes_list_tags_change(client, auth, app):
    list_tag = _etag(client, auth, LIST)
    client.patch(ITEM, json={"procedure": "CHANGED"}, headers={**auth.basic(), "If-Match": _etag(client, auth)})
    response = client.get(LIST, headers={**auth.basic(), "If-None-Match": list_tag})
    assert response.status_code == 200
    assert response.json["items"][0]["procedure"] == "CHANGED"
    with app.app_context():
        assert db.session.get(PxCode, 1).procedure == "CHANGED"
