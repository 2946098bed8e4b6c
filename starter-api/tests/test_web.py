"""The pages and their files: public, same-origin only, under a strict Content-Security-Policy."""

import re

import pytest
from helpers import READER, READER_PASSWORD, assert_json_error

from starter.http.headers import API_POLICY, PAGE_POLICY

PAGES = ["/", "/docs"]
FILES = [
    ("/static/app.js", "text/javascript"),
    ("/static/app.css", "text/css"),
    ("/static/docs.js", "text/javascript"),
    ("/docs/swagger-ui/swagger-ui-bundle.js", "text/javascript"),
    ("/docs/swagger-ui/swagger-ui.css", "text/css"),
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_public_and_load_nothing_from_elsewhere(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == PAGE_POLICY
    html = response.get_data(as_text=True)
    # No inline script or style: every <script> has a src, no element has a style attribute.
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", html) == []
    assert " style=" not in html and "<style" not in html
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/"), url
        with client.get(url) as linked:
            assert linked.status_code == 200, url


def test_page_policy_is_strict():
    directives = dict(d.strip().split(" ", 1) for d in PAGE_POLICY.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in PAGE_POLICY


@pytest.mark.parametrize(("path", "mimetype"), FILES)
def test_files_are_public(client, path, mimetype):
    with client.get(path) as response:
        assert response.status_code == 200
        assert response.mimetype == mimetype


def test_swagger_ui_files_stay_in_their_folder(client):
    assert client.get("/docs/swagger-ui/../../starter/__init__.py").status_code == 404


def test_the_document_is_public_the_data_is_not(client, auth):
    with client.get("/api/v1.0/openapi.json") as document:
        assert document.status_code == 200 and document.get_json()["openapi"].startswith("3.1")
    assert_json_error(client.get("/api/v1.0/pxcodes/"), 401)
    assert_json_error(client.get("/api/v1.0/pxcodes/039"), 401)
    assert client.get("/api/v1.0/pxcodes/", headers=auth.basic()).status_code == 200


def test_api_answers_carry_the_api_policy(client, auth):
    for response in (client.get("/api/v1.0/pxcodes/039", headers=auth.basic()), client.get("/api/v1.0/pxcodes/")):
        assert response.headers["Content-Security-Policy"] == API_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_token_says_whether_the_user_is_an_admin(client, auth):
    admin = client.get("/auth/request-token", headers=auth.basic())
    reader = client.get("/auth/request-token", headers=auth.basic(READER, READER_PASSWORD))
    assert admin.json["is_admin"] is True and reader.json["is_admin"] is False


def test_page_script_keeps_the_password_out_of_storage():
    """What the browser test checks in a browser, stated where the code is: only the session object is stored."""
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "starter" / "web" / "static" / "app.js").read_text()
    assert "localStorage" not in script
    stored = re.findall(r"sessionStorage\.setItem\((.*)\);", script)
    assert stored == ["SESSION_KEY, JSON.stringify(session)"]
    session_fields = re.search(r"session = \{(.*?)\};", script, re.S).group(1)
    assert "password" not in session_fields
