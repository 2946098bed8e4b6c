"""Conditional requests (RFC 9110 §13): ETag on every read, 304 and 412 decided once.

The tag is passed in before the body is built, so a 304 or 412 skips the render.
Where the tag comes from is the caller's business: today a digest of the data
being served, later a data version read in one cheap query.
"""

import hashlib
import json

from flask import jsonify, request
from werkzeug.exceptions import PreconditionFailed
from werkzeug.wrappers import Response

SAFE_METHODS = frozenset({"GET", "HEAD"})


def etag_of(*parts):
    """Return a strong tag digesting ``parts`` (JSON-serializable values)."""
    blob = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.md5(blob.encode(), usedforsecurity=False).hexdigest()


def evaluate_preconditions(etag):
    """Return a 304 response, raise 412, or return None to go on serving.

    ``etag`` is the current tag of the resource, or None when it does not exist.
    If-Match uses the strong comparison, If-None-Match the weak one; ``*``
    matches any existing representation.
    """
    if request.if_match and (etag is None or not request.if_match.contains(etag)):
        raise PreconditionFailed("If-Match does not match the current ETag")
    if request.if_none_match and etag is not None and request.if_none_match.contains_weak(etag):
        if request.method in SAFE_METHODS:
            response = Response(status=304)
            response.set_etag(etag)
            return response
        raise PreconditionFailed("If-None-Match matches the current ETag")
    return None


def tagged_json(etag, body, status=200, headers=None):
    """Return ``body`` as JSON with its ETag set."""
    response = jsonify(body)
    response.status_code = status
    response.set_etag(etag)
    if headers:
        response.headers.update(headers)
    return response


def conditional_json(etag, render):
    """Answer 304/412 from ``etag`` alone, else ``render()`` as tagged JSON."""
    not_modified = evaluate_preconditions(etag)
    if not_modified is not None:
        return not_modified
    return tagged_json(etag, render())
