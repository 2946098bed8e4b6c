"""Repeated reads answered before Flask: the app's own answers, replayed from memory.

A view that calls ``offer(version)`` declares its answer a function of the URL
and the codes' data version alone, the same for every user who may read. This
WSGI middleware keeps such answers (200 and 304, per process) and serves the
next identical request itself when all of these hold:

* the version it was made at is still current, as the ``VersionWatch`` knows
  it (PostgreSQL notifications; never older than ``READ_CACHE_MAX_STALE``);
* the request's credentials (basic, or a token) are ones the app verified
  recently, and no user changed since (``auth.authenticate``, the app's own call, given
  the users' version: no hash, no query);
* the rate limits admit it, counted in flask-limiter's own buckets
  (``limits.Admission``).

Anything else (a first request, new credentials, CORS, Range,
If-Match, a limit reached, the watch without a connection) goes to Flask
untouched, which answers it and any error, and refills the cache. Responses are
captured from Flask, so a replay carries the same bytes and headers; only the
rate-limit headers are made fresh.
"""

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass

from flask import current_app, has_app_context, request
from werkzeug.http import parse_etags, unquote_etag

from .. import limits, observability
from ..auth import authenticate
from ..observability.middleware import REPLAYED, ROUTE, USER

OFFER = "starter.replay.offer"
EXTENSION = "starter_read_cache"
# Requests with these headers are answered differently or per client: Flask decides.
PASS_THROUGH_HEADERS = (
    "HTTP_ORIGIN",
    "HTTP_IF_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_IF_RANGE",
    "HTTP_RANGE",
)


def offer(version):
    """Let the read cache replay this request's answer while the codes are at ``version``."""
    request.environ[OFFER] = (version, request.endpoint)


@dataclass
class Replay:
    version: str
    endpoint: str
    route: str  # the URL rule, for the access line and the metrics
    etag: str  # unquoted
    etag_header: str  # as sent: what a revalidating client sends back, mostly
    status: str
    headers: list
    body: bytes


class ReadCache:
    """WSGI middleware in front of the Flask app; see the module's docstring."""

    def __init__(self, wsgi_app, watch, config, prefix, maxsize, principal_of, metrics):
        self.wsgi_app = wsgi_app
        self.principal_of = principal_of  # (Authorization, users' version) -> principal or None
        self.answered_by_replay = metrics.read_cache.labels("replay")
        self.answered_by_flask = metrics.read_cache.labels("flask")
        self.watch = watch
        self.config = config
        self.admission = limits.Admission(config)
        self.prefix = prefix
        self.maxsize = maxsize
        self.hits = 0  # replays served: for tests and the curious
        self._entries = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if (
            method not in ("GET", "HEAD")
            or not environ.get("PATH_INFO", "").startswith(self.prefix)
            or "HTTP_AUTHORIZATION" not in environ
            or any(name in environ for name in PASS_THROUGH_HEADERS)
        ):
            return self.wsgi_app(environ, start_response)
        not_modified = "HTTP_IF_NONE_MATCH" in environ
        key = _request_key(environ)
        replay = self._replay(environ, key, not_modified)
        if replay is not None:
            status, headers, body = replay
            start_response(status, headers)
            self.hits += 1
            self.answered_by_replay.inc()
            return [] if method == "HEAD" else [body]
        self.answered_by_flask.inc()
        if method != "GET":
            return self.wsgi_app(environ, start_response)
        return self._capture(environ, start_response, key)

    def _replay(self, environ, key, conditional):
        versions = self.watch.current()
        if versions is None:
            return None
        entry = self._get((key, False))
        if entry is None or entry.version != versions.codes:
            return None
        if conditional and _matches(environ["HTTP_IF_NONE_MATCH"], entry):
            full, entry = entry, self._get((key, True))
            if entry is None or (entry.version, entry.etag) != (full.version, full.etag):
                return None
        principal = self.principal_of(environ["HTTP_AUTHORIZATION"], versions.users)
        if principal is None:
            return None
        address = environ.get("REMOTE_ADDR") or "127.0.0.1"
        limit_headers = self.admission.admit(address, principal.username, entry.endpoint)
        if limit_headers is None:
            return None
        environ.update({ROUTE: entry.route, USER: principal.username, REPLAYED: True})
        return entry.status, entry.headers + limit_headers, entry.body

    def _capture(self, environ, start_response, key):
        answer = []

        def capturing_start_response(status, headers, exc_info=None):
            answer[:] = [status, headers]
            return start_response(status, headers, exc_info)

        result = self.wsgi_app(environ, capturing_start_response)
        offered = environ.get(OFFER)
        if offered is None or not answer or answer[0][:3] not in ("200", "304"):
            return result
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = answer
        etag = next((value for name, value in headers if name.lower() == "etag"), None)
        if etag is not None:
            version, endpoint = offered
            kept = [(name, value) for name, value in headers if name not in limits.HEADERS]
            route = environ.get(ROUTE)
            entry = Replay(version, endpoint, route, unquote_etag(etag)[0], etag, status, kept, body)
            self._put((key, status.startswith("304")), entry)
        return [body]

    def _get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _put(self, key, entry):
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self):
        with self._lock:
            self._entries.clear()


def _matches(if_none_match, entry):
    """Weak comparison (RFC 9110 §13.1.2), parsed only when not the tag byte for byte."""
    return if_none_match == entry.etag_header or parse_etags(if_none_match).contains_weak(entry.etag)


def _request_key(environ):
    # Everything the app's absolute links are built from, and the arguments.
    return (
        environ.get("wsgi.url_scheme"),
        environ.get("HTTP_HOST"),
        environ.get("SERVER_NAME"),
        environ.get("SERVER_PORT"),
        environ.get("SCRIPT_NAME", ""),
        environ.get("PATH_INFO", ""),
        environ.get("QUERY_STRING", ""),
    )


def init_app(app):
    """Put the read cache in front of ``app`` if enabled and the database can announce
    its changes (PostgreSQL); on SQLite every request goes through Flask."""
    from sqlalchemy import event
    from sqlalchemy.engine import make_url
    from sqlalchemy.orm import Session

    from ..config import ConfigError
    from ..db import engine_options
    from ..versionwatch import VersionWatch

    config = app.config
    url = config["SQLALCHEMY_DATABASE_URI"]
    if not config["READ_CACHE"] or make_url(url).get_backend_name() != "postgresql":
        return
    if not config["READ_CACHE_MAX_STALE"] > 0 or config["READ_CACHE_ENTRIES"] < 1:
        raise ConfigError("READ_CACHE_MAX_STALE and READ_CACHE_ENTRIES must be positive")
    # The app's own connect arguments: the watch's waits get the same deadlines (dbhealth).
    connect_args = config.get("SQLALCHEMY_ENGINE_OPTIONS", {}).get("connect_args") or engine_options(
        url, config["DB_CONNECT_TIMEOUT"], config["DB_STATEMENT_TIMEOUT"]
    )["connect_args"]
    watch = VersionWatch(url, connect_args, config["READ_CACHE_MAX_STALE"])
    cache = ReadCache(
        app.wsgi_app, watch, config, "/api/", config["READ_CACHE_ENTRIES"],
        functools.partial(authenticate, app), observability.metrics(app),
    )
    app.wsgi_app = cache
    app.extensions[EXTENSION] = cache
    age = observability.metrics(app).data_version_age
    observability.metrics(app).add_sampler(lambda: age.set(watch.confirmed_age() or 0))
    if not event.contains(Session, "after_commit", _invalidate_after_commit):
        event.listen(Session, "after_commit", _invalidate_after_commit)


def close(app):
    """Stop ``app``'s read cache (its listening thread and connection), if it has one."""
    cache = app.extensions.pop(EXTENSION, None)
    if cache is not None:
        cache.watch.stop()


def _invalidate_after_commit(session):
    # This process wrote: its next reads ask the database until the watch has re-read,
    # so a client sees its own write at once (the other processes hear of it by NOTIFY).
    if has_app_context():
        cache = current_app.extensions.get(EXTENSION)
        if cache is not None:
            cache.watch.invalidate()
