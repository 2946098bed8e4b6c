"""``/api/v1.0/openapi.json``: the API's OpenAPI 3.1 document."""

from pathlib import Path

from flask import send_file

from ..limits import per_user
from . import bp

OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")


@bp.get("/openapi.json")
@per_user
def openapi_document():
    return send_file(OPENAPI_DOCUMENT, mimetype="application/json", max_age=0)
