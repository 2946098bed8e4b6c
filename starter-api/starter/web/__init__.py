"""The pages a browser opens: the code browser at ``/`` and the API's interactive docs at ``/docs``.

No credentials here: the pages and their files are public, the data stays behind
the API's auth (the page signs in for a token). Everything is served from this
package and from Swagger UI's PyPI package; nothing comes from another origin,
and the pages' Content-Security-Policy (``http.headers.PAGE_POLICY``) says so.
"""

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, render_template, send_from_directory

from ..http.headers import page_policy

SWAGGER_UI_DIST = Path(flask_swagger_ui.__file__).with_name("dist")

bp = Blueprint(
    "web", __name__, static_folder="static", static_url_path="/static", template_folder="templates"
)
bp.after_request(page_policy)


@bp.get("/")
def code_browser():
    return render_template("index.html")


@bp.get("/docs")
def api_docs():
    return render_template("docs.html")


@bp.get("/docs/swagger-ui/<path:filename>")
def swagger_ui_file(filename):
    return send_from_directory(SWAGGER_UI_DIST, filename)
