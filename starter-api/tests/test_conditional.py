"""Conditional requests: ETag on every read, 304 on If-None-Match, 412 on If-Match."""

import pytest

LIST = "/api/v1.0/pxcodes/"
ITEM = "/api/v1.0/pxcodes/039"


@pytest.fixture(params=[LIST, ITEM, LIST + "?per_page=10&page=3"])
def url(request):
    return request.param


def _etag(client, auth, url):
    response = client.get(url, headers=auth.basic())
    assert response.status_code == 200
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), "a strong, quoted tag"
    return etag


def test_same_data_same_tag(client, auth, url):
    assert _etag(client, auth, url) == _etag(client, auth, url)


def test_if_none_match_gives_304_without_body(client, auth, url):
    etag = _etag(client, auth, url)
    response = client.get(url, headers={**auth.basic(), "If-None-Match": etag})
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == etag


@pytest.mark.parametrize(
    "header",
    [
        "{etag}",
        "W/{etag}",
        '"other", {etag}',
        '"a", W/"b", W/{etag}',
        "*",
    ],
)
def test_if_none_match_forms(client, auth, url, header):
    etag = _etag(client, auth, url)
    response = client.get(url, headers={**auth.basic(), "If-None-Match": header.format(etag=etag)})
    assert response.status_code == 304


@pytest.mark.parametrize("header", ['"stale"', 'W/"stale"', "garbage", '"", ,,', "W/"])
def test_if_none_match_that_does_not_match_gives_200(client, auth, url, header):
    response = client.get(url, headers={**auth.basic(), "If-None-Match": header})
    assert response.status_code == 200
    assert response.json


def test_head_gets_304_too(client, auth, url):
    etag = _etag(client, auth, url)
    response = client.head(url, headers={**auth.basic(), "If-None-Match": etag})
    assert response.status_code == 304


def test_if_match_current_tag_serves(client, auth, url):
    etag = _etag(client, auth, url)
    for header in (etag, "*", f'"x", {etag}'):
        response = client.get(url, headers={**auth.basic(), "If-Match": header})
        assert response.status_code == 200


@pytest.mark.parametrize("header", ['"stale"', "W/{etag}", "garbage"])
def test_if_match_stale_tag_is_412(client, auth, url, header):
    etag = _etag(client, auth, url)
    response = client.get(url, headers={**auth.basic(), "If-Match": header.format(etag=etag)})
    assert response.status_code == 412
    assert response.json["status"] == 412
    assert response.json["error"] == "Precondition Failed"


def test_missing_item_is_404_whatever_the_preconditions(client, auth):
    for header in ("If-Match", "If-None-Match"):
        response = client.get(LIST + "000", headers={**auth.basic(), header: "*"})
        assert response.status_code == 404


def test_tag_changes_when_the_data_changes(client, auth):
    list_before = _etag(client, auth, LIST)
    item_before = _etag(client, auth, ITEM)
    created = client.post(LIST, json={"pxcode": "040", "procedure": "NEW"}, headers=auth.basic())
    assert created.status_code == 201
    list_after = _etag(client, auth, LIST)
    assert list_after != list_before
    assert _etag(client, auth, ITEM) == item_before
    stale = client.get(LIST, headers={**auth.basic(), "If-None-Match": list_before})
    assert stale.status_code == 200
    assert stale.json["meta"]["total"] == 101


def test_tag_differs_between_pages_and_hosts(client, auth):
    page1 = _etag(client, auth, LIST + "?per_page=10&page=1")
    page2 = _etag(client, auth, LIST + "?per_page=10&page=2")
    assert page1 != page2
    other_host = client.get(LIST, headers=auth.basic(), base_url="http://other.example")
    assert other_host.headers["ETag"] != _etag(client, auth, LIST)


def test_tags_are_the_same_across_app_instances(make_app, app, auth):
    """Two processes (two apps) on one database give the same tag: no per-process state."""
    other = make_app()
    tags = [
        a.test_client().get(ITEM, headers=auth.basic()).headers["ETag"] for a in (app, other)
    ]
    assert tags[0] == tags[1]
