"""Response headers every answer gets: no MIME sniffing, no shared caching of private data,
a Content-Security-Policy (nothing for the API's JSON; the service's own files only for pages)."""

from flask import request

# A JSON answer loads nothing and is framed by nothing.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# The pages (starter.web): scripts, styles, images and calls from this origin only; no inline
# script or style, no plugins, no framing. data: images are Swagger UI's icons.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def add_security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", API_POLICY)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    # An answer to a request with credentials is for that user only.
    if "Authorization" in request.headers and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "private"
    return response


def page_policy(response):
    """The pages' policy, on the answers of the blueprint that serves them."""
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response


def init_app(app):
    app.after_request(add_security_headers)
