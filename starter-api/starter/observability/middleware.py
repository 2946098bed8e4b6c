"""What happens to every request, seen from outside the app: its id, its metrics, its access line.

WSGI middleware around the read cache and Flask (inside ProxyFix, so the address is the one the
trusted proxy gives). The request id comes from ``X-Request-ID`` when it is a sane one (a proxy's),
else is made here; it is returned on every answer, replays and errors included, and stamped on every
log line written while the request runs (``logs.RequestIdFilter``). Inner layers leave what only
they know in the environ: the route template (``ROUTE``), the user (``USER``), whether the read
cache replayed the answer (``REPLAYED``).
"""

import contextvars
import logging
import os
import re
import time

REQUEST_ID = "starter.request_id"
ROUTE = "starter.route"
USER = "starter.user"
REPLAYED = "starter.replayed"
ACCESS_FIELDS = "access_fields"  # the access line's record attribute holding its fields (logs.JsonLines)
# Letters, digits and a little punctuation, as proxies and tracers make them; anything else is replaced.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")

current_request_id = contextvars.ContextVar("starter_request_id", default=None)
access_log = logging.getLogger("starter.access")


class RequestObserver:
    """See the module docstring. ``metrics`` is a ``Metrics``; ``log_access`` writes the access line."""

    def __init__(self, wsgi_app, metrics, log_access):
        self.wsgi_app = wsgi_app
        self.metrics = metrics
        self.log_access = log_access

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        self.metrics.ensure_sampling()
        request_id = environ.get("HTTP_X_REQUEST_ID")
        if request_id is None or not VALID_REQUEST_ID.fullmatch(request_id):
            request_id = os.urandom(16).hex()
        environ[REQUEST_ID] = request_id
        answered = []

        def observed_start_response(status, headers, exc_info=None):
            answered[:] = [status]
            # A new list: an inner layer may keep the one it passed (the read cache does).
            return start_response(status, [*headers, ("X-Request-ID", request_id)], exc_info)

        token = current_request_id.set(request_id)
        try:
            return self.wsgi_app(environ, observed_start_response)
        finally:
            current_request_id.reset(token)
            self._record(environ, answered[0] if answered else "500", time.perf_counter() - started)

    def _record(self, environ, status, seconds):
        route = environ.get(ROUTE) or "unmatched"
        method = environ.get("REQUEST_METHOD", "")
        code = status[:3]
        self.metrics.count_request(route, method, code, seconds)
        if self.log_access:
            access_log.info(
                "%s %s %s %.1fms",
                method, route, code, seconds * 1000,
                extra={
                    "request_id": environ[REQUEST_ID],
                    ACCESS_FIELDS: {
                        "method": method,
                        "route": route,
                        "path": environ.get("PATH_INFO", ""),
                        "status": int(code) if code.isdigit() else code,
                        "duration_ms": round(seconds * 1000, 3),
                        "user": environ.get(USER),
                        "replayed": bool(environ.get(REPLAYED)),
                        "address": environ.get("REMOTE_ADDR"),
                    },
                },
            )
