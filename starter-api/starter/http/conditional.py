"""Conditional requests (RFC 9110 §13): ETag on every read, 304, 412 and 428 decided once.

The tag is passed in before the body is built, so a 304 or 412 skips the
render. Where the tag comes from is the caller's business: a digest of an
item's fields, or of the data version and the request URL for a list.
"""

import hashlib
import json

from flask import current_app, jsonify, request
from werkzeug.exceptions import PreconditionFailed, PreconditionRequired
from werkzeug.wrappers import Response

from ..cache import ComputedCache

SAFE_METHODS = frozenset({"GET", "HEAD"})


def etag_of(*parts):
    """Return a strong tag digesting ``parts`` (JSON-serializable values)."""
    blob = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.md5(blob.encode(), usedforsecurity=False).hexdigest()


def encode_json(body, dumps):
    """A body as the render cache sends it: ``dumps`` (the app's JSON provider's) and a newline."""
    return dumps(body).encode() + b"\n"


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
            return not_modified(etag)
        raise PreconditionFailed("If-None-Match matches the current ETag")
    return None


def not_modified(etag):
    """A 304 naming ``etag``."""
    response = Response(status=304)
    response.set_etag(etag)
    return response


def json_with_etag(etag, body, status=200, headers=None):
    """Return ``body`` as JSON with its ETag set."""
    response = jsonify(body)
    response.status_code = status
    response.set_etag(etag)
    if headers:
        response.headers.update(headers)
    return response


def json_or_304(etag, render):
    """Answer 304/412 from ``etag`` alone, else ``render()`` as tagged JSON."""
    not_modified = evaluate_preconditions(etag)
    if not_modified is not None:
        return not_modified
    return json_with_etag(etag, render())


def require_if_match(etag):
    """Guard a write: 428 without ``If-Match``, 412 unless it names ``etag`` (strong compare)."""
    if "If-Match" not in request.headers:
        raise PreconditionRequired("this request needs If-Match with the item's current ETag")
    if not request.if_match.contains(etag):
        raise PreconditionFailed("If-Match does not match the current ETag: fetch it again")


class RenderedCache:
    """Rendered JSON bodies with their headers, keyed by ETag.

    Safe only for tags that change whenever the body would (a data version in
    the tag): then an entry can never be stale, and every process fills its own.
    """

    def __init__(self, maxsize=256):
        self._entries = ComputedCache(maxsize)

    def get_or_render(self, etag, render):
        def encoded():
            body, headers = render()
            return encode_json(body, current_app.json.dumps), headers

        return self._entries.get_or_compute(etag, encoded)

    def clear(self):
        self._entries.clear()


def cached_json_or_304(etag, render, cache):
    """Like ``json_or_304``, but ``render() -> (body, headers)`` runs once per tag."""
    not_modified = evaluate_preconditions(etag)
    if not_modified is not None:
        return not_modified
    body, headers = cache.get_or_render(etag, render)
    response = current_app.response_class(body, mimetype="application/json", headers=headers)
    response.set_etag(etag)
    return response
