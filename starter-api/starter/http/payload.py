"""Request bodies: JSON objects only, with 415/400 errors that say what is wrong."""

from flask import request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType


def json_object():
    """Return the request body as a dict (415 if not JSON, 400 if malformed or not an object)."""
    if not request.is_json:
        raise UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")
    try:
        data = request.get_json()
    except (BadRequest, RecursionError):
        # RecursionError: absurdly deep nesting, which the json module cannot parse.
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data
