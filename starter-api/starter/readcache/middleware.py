"""``ReadCache``: WSGI middleware in front of Flask that keeps answers views allowed to replay, and
replays them (see the package's docstring for when)."""

import threading
from contextlib import nullcontext
from dataclasses import dataclass

from cachetools import LRUCache
from werkzeug.http import parse_etags, unquote_etag

from ..observability.middleware import REPLAYED, ROUTE, USER
from .admission import LIMIT_HEADERS, Admission

REPLAYABLE = "starter.readcache.replayable"  # environ: (version, endpoint, depends_on), by allow_replay
# What a kept answer holds beyond the text of its body, headers and key: the Python objects
# around them (str, tuple, list, the dataclass, the LRU's links); tracemalloc checks it in
# tests/test_read_cache.py.
ENTRY_OVERHEAD = 2048
# How long a request waits for the identical one Flask is answering before asking Flask itself.
FLIGHT_WAIT_SECONDS = 5.0
# Requests with these headers are answered differently or per client: Flask decides.
PASS_THROUGH_HEADERS = (
    "HTTP_ORIGIN",
    "HTTP_IF_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_IF_RANGE",
    "HTTP_RANGE",
)


class _Flight(threading.Event):
    """A request Flask is answering; identical ones wait for it (``FLIGHT_WAIT_SECONDS`` at most)."""

    def __init__(self, key):
        super().__init__()
        self.key = key


@dataclass
class KeptAnswer:
    """An answer of the app's, as it was sent, with what a replay of it must match."""

    version: str
    depends_on: object  # a code, a filter (depends.Matching), a page (depends.Window), or None: the whole table
    endpoint: str
    route: str  # the URL rule, for the access line and the metrics
    etag: str  # unquoted
    etag_header: str  # as sent: what a revalidating client sends back, mostly
    status: str
    headers: list
    body: bytes
    size: int = 0  # what it holds in memory, its key's text included (set when kept)


class ReadCache:
    """WSGI middleware in front of the Flask app; see the package's docstring."""

    def __init__(self, wsgi_app, watch, config, prefix, principal_of, metrics, dumps, batches=None,
                 waiting=nullcontext):
        self.wsgi_app = wsgi_app
        self.dumps = dumps  # the app's JSON provider's: a page re-rendered here reads as Flask's
        self.principal_of = principal_of  # (Authorization, users' version) -> principal or None
        self.waiting = waiting  # a context manager around a wait for another request's answer
        self.answered_by_replay = metrics.read_cache.labels("replay")
        self.answered_by_flask = metrics.read_cache.labels("flask")
        self.watch = watch
        self.admission = Admission(config, batches)
        self.prefix = prefix
        self.hits = 0  # replays served: for tests and the curious
        # Bounded in bytes (READ_CACHE_BYTES) and in answers (READ_CACHE_ENTRIES).
        self._kept = LRUCache(config["READ_CACHE_BYTES"], getsizeof=lambda entry: entry.size)
        self._max_entries = config["READ_CACHE_ENTRIES"]
        self._lock = threading.Lock()
        self._flights = {}  # (request key, conditional) -> _Flight: the one request in Flask for it

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
        replay = self._replayed_answer(environ, key, not_modified)
        flight = None
        if replay is None and method == "GET" and self.watch.known() is not None:
            # The same request already in Flask (a burst of clients' first requests): wait for
            # its answer and replay that, rather than each making it again.
            flight, leading = self._join_flight((key, not_modified))
            if not leading:
                with self.waiting():  # its turn given back meanwhile (http.turns)
                    flight.wait(FLIGHT_WAIT_SECONDS)
                flight = None
                replay = self._replayed_answer(environ, key, not_modified)
        if replay is not None:
            status, headers, body = replay
            start_response(status, headers)
            self.hits += 1
            self.answered_by_replay.inc()
            return [] if method == "HEAD" else [body]
        self.answered_by_flask.inc()
        if method != "GET":
            return self.wsgi_app(environ, start_response)
        try:
            return self._answer_and_keep(environ, start_response, key)
        finally:
            if flight is not None:
                self._land(flight)

    def _join_flight(self, key):
        """``(event, leading)``: the request in Flask for ``key`` (new and led by this one if none)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight(key)
            return flight, True

    def _land(self, flight):
        with self._lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
        flight.set()

    def _replayed_answer(self, environ, key, conditional):
        """``(status, headers, body)`` of the kept answer this request may have, else None."""
        known = self.watch.known()
        if known is None:
            return None
        versions, written = known
        # A revalidation: the 304 kept, if it names a tag the client holds (current, as the 304
        # is); else the page, unless it is the client's (Flask then answers the 304, kept next).
        entry = self._current((key, True), versions, written) if conditional else None
        if entry is None or not _matches(environ["HTTP_IF_NONE_MATCH"], entry):
            entry = self._current((key, False), versions, written)
            if entry is None or (conditional and _matches(environ["HTTP_IF_NONE_MATCH"], entry)):
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

    def _answer_and_keep(self, environ, start_response, key):
        """Let Flask answer, and keep the answer if the view allowed its replay."""
        answer = []

        def capturing_start_response(status, headers, exc_info=None):
            answer[:] = [status, headers]
            return start_response(status, headers, exc_info)

        result = self.wsgi_app(environ, capturing_start_response)
        replayable = environ.get(REPLAYABLE)
        if replayable is None or not answer or answer[0][:3] not in ("200", "304"):
            return result
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = answer
        etag = next((value for name, value in headers if name.lower() == "etag"), None)
        if etag is not None:
            version, endpoint, depends_on = replayable
            kept = [(name, value) for name, value in headers if name not in LIMIT_HEADERS]
            route = environ.get(ROUTE)
            entry = KeptAnswer(
                version, depends_on, endpoint, route, unquote_etag(etag)[0], etag, status, kept, body
            )
            self._put((key, status.startswith("304")), entry)
        return [body]

    def _current(self, key, versions, written):
        """The answer kept under ``key`` as it is at ``versions``, or None: made at them, or made
        of rows (a code, a filter's, a page's) that no write touched since, its total made
        current if that alone changed; and not made of rows this process ``written`` since (its
        own writes, seen at once)."""
        entry = self._get(key)
        if entry is None:
            return None
        depends_on, version = entry.depends_on, versions.codes
        if written and not self._untouched_by(depends_on, written):
            return None
        if entry.version == version:
            return entry
        if depends_on is None or not self.watch.unchanged(depends_on, entry.version, version):
            return None
        if getattr(depends_on, "total", versions.count) != versions.count:
            return self._with_total(key, entry, versions)
        entry.version = version  # the answer at this version too: the next check starts here
        return entry

    def _untouched_by(self, depends_on, written):
        """Whether this process's own writes (``changelog.Change``s), not read by the watch yet,
        leave what ``depends_on`` names as it was, its total included."""
        if depends_on is None:
            return False
        if isinstance(depends_on, str):
            return all(change.pxcode != depends_on for change in written)
        if not self.watch.can_compare(depends_on):
            return False
        if hasattr(depends_on, "total") and any(c.before is None or c.after is None for c in written):
            return False  # a count the watch has not read yet
        return not any(depends_on.touched_by(change) for change in written)

    def _with_total(self, key, entry, versions):
        """A page whose rows no write touched, re-rendered with the total at ``versions``: the
        same bytes Flask would answer (its ETag the version's), without Flask or a query."""
        try:
            window, body, changed = entry.depends_on.with_total(
                entry.body if entry.body else None, versions.count, versions.codes, self.dumps
            )
        except (ValueError, KeyError, TypeError):  # not a page's body: Flask answers it
            return None
        changed = {name.lower(): value for name, value in changed.items()}
        if body is None:
            body = entry.body
        else:
            changed["content-length"] = str(len(body))
        headers = [(name, changed.get(name.lower(), value)) for name, value in entry.headers]
        tag = unquote_etag(changed["etag"])[0]
        renewed = KeptAnswer(
            versions.codes, window, entry.endpoint, entry.route, tag, changed["etag"], entry.status, headers, body
        )
        self._put(key, renewed)
        return renewed

    def _get(self, key):
        with self._lock:
            return self._kept.get(key)

    def _put(self, key, entry):
        entry.size = ENTRY_OVERHEAD + len(entry.body) + sum(
            len(name) + len(value) for name, value in entry.headers
        ) + sum(len(part) for part in key[0] if part)
        with self._lock:
            try:
                self._kept[key] = entry
            except ValueError:  # larger than the whole cache: not kept
                self._kept.pop(key, None)
                return
            while len(self._kept) > self._max_entries:
                self._kept.popitem()  # the least recently used

    def clear(self):
        with self._lock:
            self._kept.clear()

    def kept(self):
        """``(answers, bytes)`` held now: for the metrics, tests and the curious."""
        with self._lock:
            return len(self._kept), self._kept.currsize


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
