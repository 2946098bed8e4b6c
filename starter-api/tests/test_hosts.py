"""Which Host the service answers for (TRUSTED_HOSTS), and redirects in the API's own shape (issue 9 item 9)."""

import pytest

from helpers import assert_json_error
from starter.config import ConfigError, load

ITEM = "/api/v1.0/pxcodes/039"


@pytest.fixture
def strict_app(make_seeded_app):
    return make_seeded_app(TRUSTED_HOSTS=["api.example.org", ".codes.example.org"])


@pytest.mark.parametrize("host", ["evil.example", "api.example.org.evil.example", "example.org", "localhost"])
def test_a_host_not_trusted_gets_a_json_400(strict_app, auth, host):
    response = strict_app.test_client().get(ITEM, headers=auth.basic(), base_url=f"http://{host}")
    body = assert_json_error(response, 400)
    assert "not trusted" in body["message"]


@pytest.mark.parametrize("host", ["api.example.org", "api.example.org:8443", "eu.codes.example.org"])
def test_a_trusted_host_gets_links_to_itself(strict_app, auth, host):
    body = strict_app.test_client().get(ITEM, headers=auth.basic(), base_url=f"https://{host}").json
    assert body["url"] == f"https://{host}/api/v1.0/pxcodes/039"


@pytest.mark.parametrize("host", ["", "bad host", "evil.example/x", "a@b"])
def test_a_request_without_a_usable_host_gets_a_json_400(client, auth, host):
    # The testing profile trusts any host; a Host that is no host name is still refused.
    response = client.get(ITEM, headers={**auth.basic(), "Host": host})
    body = assert_json_error(response, 400)
    assert "Host" in body["message"]


@pytest.mark.parametrize("path", ["/api/v1.0/pxcodes", "/api/v1.0/pxcodes?q=hip&per_page=5"])
def test_the_slash_redirect_is_json_and_names_no_host(client, auth, path):
    response = client.get(path, headers=auth.basic(), base_url="http://evil.example")
    assert response.status_code == 308
    assert response.headers["Content-Type"] == "application/json"
    expected = "/api/v1.0/pxcodes/" + (path.partition("?")[2] and "?" + path.partition("?")[2])
    assert response.headers["Location"] == expected
    assert response.json == {"status": 308, "error": "Permanent Redirect", "message": f"moved to {expected}"}
    followed = client.get(response.headers["Location"], headers=auth.basic())
    assert followed.status_code == 200


def test_the_redirect_of_a_host_not_trusted_is_a_400(strict_app, auth):
    response = strict_app.test_client().get("/api/v1.0/pxcodes", headers=auth.basic(), base_url="http://evil.example")
    assert_json_error(response, 400)


def test_health_answers_on_the_default_names(make_app):
    app = make_app(TRUSTED_HOSTS=load("production", environ={})["TRUSTED_HOSTS"])
    client = app.test_client()
    assert client.get("/healthz").status_code == 200  # localhost, the test client's host
    assert client.get("/healthz", base_url="http://127.0.0.1:5000").status_code == 200
    assert_json_error(client.get("/healthz", base_url="http://evil.example"), 400)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ["localhost", "127.0.0.1"]),
        ({"TRUSTED_HOSTS": "api.example.org, localhost"}, ["api.example.org", "localhost"]),
        ({"TRUSTED_HOSTS": "*"}, None),
    ],
)
def test_trusted_hosts_come_from_the_environment(environ, expected):
    for profile in ("production", "development"):
        assert load(profile, environ=environ)["TRUSTED_HOSTS"] == expected
    assert load("testing", environ={})["TRUSTED_HOSTS"] is None


def test_an_empty_list_of_hosts_is_a_config_error():
    with pytest.raises(ConfigError, match="TRUSTED_HOSTS"):
        load("production", environ={"TRUSTED_HOSTS": " , "})
