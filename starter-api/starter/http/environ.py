"""Requests see what the client and the server said, not the process's environment.

granian (like wsgiref) starts every request's WSGI environ from a copy of
``os.environ``: ``SECRET_KEY``, ``DATABASE_URL`` or ``PGPASSWORD`` would sit in
``request.environ`` for any error reporter to dump, and a variable such as
``HTTP_PROXY`` would read as a request header.
"""

import os

# What a server sets per request: never removed, whatever the process's environment holds.
REQUEST_KEYS = frozenset({
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
    "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR",
    "REMOTE_PORT", "REQUEST_URI", "RAW_URI", "GATEWAY_INTERFACE", "SERVER_SOFTWARE",
})


def without_process_environment(wsgi_app, environment=None):
    """Wrap ``wsgi_app`` so that variables of ``environment`` (``os.environ``) are
    removed from each request's environ, unless the request itself set them."""
    environment = dict(os.environ if environment is None else environment)
    inherited = tuple(
        (name, value)
        for name, value in environment.items()
        if name not in REQUEST_KEYS and not name.startswith("wsgi.")
    )

    def app(environ, start_response):
        for name, value in inherited:
            if environ.get(name) == value:
                del environ[name]
        return wsgi_app(environ, start_response)

    return app
