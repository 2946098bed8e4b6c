"""Which Host the service answers for, and redirects that name no host at all.

Links in answers are built from the request's Host, so only the names in
``TRUSTED_HOSTS`` (Flask checks them; werkzeug compares without the port) are served:
any other, and a request with no usable Host, gets a JSON 400. The read cache keys its
answers by Host and keeps only what Flask answered, so a rejected host is never replayed.

werkzeug's routing redirects (``/api/v1.0/pxcodes`` -> ``/api/v1.0/pxcodes/``) skip Flask's
error handlers and come as an HTML page with an absolute ``Location``. They are answered
here instead: the JSON error shape, and a relative ``Location`` (RFC 9110 section 10.2.2),
the same whatever the Host and whoever keeps it.
"""

from urllib.parse import urlsplit

from flask import request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import RequestRedirect

from .errors import error_response


def check_host_and_redirect():
    """Before every request: refuse a missing or untrusted Host; answer routing redirects."""
    # Raises werkzeug's SecurityError (a 400) for a host TRUSTED_HOSTS does not name.
    if not request.host:
        raise BadRequest("a Host header naming this service is required")
    redirect = request.routing_exception
    if isinstance(redirect, RequestRedirect):
        target = urlsplit(redirect.new_url)
        location = target.path + (f"?{target.query}" if target.query else "")
        return error_response(redirect.code, f"moved to {location}", {"Location": location})
    return None


def init_app(app):
    app.before_request(check_host_and_redirect)
