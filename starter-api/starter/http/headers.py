"""Response headers every answer gets: no MIME sniffing, no shared caching of private data."""

from flask import request


def add_security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # An answer to a request with credentials is for that user only.
    if "Authorization" in request.headers and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "private"
    return response


def init_app(app):
    app.after_request(add_security_headers)
