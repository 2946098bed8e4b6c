"""``/api/v1.0/openapi.json``: the API's OpenAPI 3.1 document, readable without credentials
(rate-limited per address, as every route is)."""

from pathlib import Path

from flask import send_file

from . import bp

OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")


@bp.get("/openapi.json")
def openapi_document():
    return send_file(OPENAPI_DOCUMENT, mimetype="application/json", max_age=0)
