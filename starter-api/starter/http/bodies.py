"""Request bodies: read once, whole, on a thread of their own, within a deadline and a size limit.

granian hands a request to an app thread as soon as its headers are in, and ``wsgi.input.read()``
then blocks that thread until the client has sent the body; granian has no body timeout. A few
clients that stalled mid-body held every app thread, and every other request waited.

``BodyReader`` (WSGI middleware) replaces ``wsgi.input`` of a request that has a body with a
``DeadlineBody``. Nothing is read until the app asks (so a request the app refuses first, a 401
say, never waits for its body); then the whole body is read on a reader thread while the app's
thread waits at most ``timeout`` seconds from the request's arrival:

* the body arrived: the app reads it from memory;
* the deadline passed: 408 (``Connection: close``);
* over ``max_length`` bytes, with or without a ``Content-Length`` (a chunked body had no limit):
  413, nothing more read;
* ``slots`` bodies are being read already: 503 with Retry-After, the body left unread.

A reader blocked on a client that never sends its body cannot be interrupted (granian's read has
no timeout): it returns when the client sends the rest or closes the connection. granian must not
finish that request meanwhile (once the app returns, it waits for the body holding the GIL, and
the whole worker stops), so the answer (the 408) is sent at once but its iterable ends only when
the reader is done. Such a client holds one slot and one of granian's spare threads, never an app
thread; ``slots`` bounds them. While the app's thread waits, it gives its database connection back
to the pool (``release_database_connection``) and its turn (``turns``), or stalled bodies would
hold the whole pool, or every turn.

Every refusal is a werkzeug HTTP error raised from the read, so the app answers it as JSON.
"""

import io
import threading
import time
from contextlib import contextmanager, nullcontext

from flask import has_app_context
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout, ServiceUnavailable

from ..config import ConfigError
from ..db import db
from . import turns

RETRY_AFTER_SECONDS = 1
# How long the app's thread waits before handing back its database connection: a body that
# comes with its headers (nearly all) is in well before, and the request keeps its transaction.
PATIENCE_SECONDS = 0.05
CHUNK = 64 * 1024


class _Closing:
    """An HTTP error whose answer ends the connection: the rest of its body is never read."""

    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope), ("Connection", "close")]


class BodyTimeout(_Closing, RequestTimeout):
    pass


class BodyTooLarge(_Closing, RequestEntityTooLarge):
    pass


class BodiesBusy(_Closing, ServiceUnavailable):
    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope), ("Retry-After", str(RETRY_AFTER_SECONDS))]


def has_body(environ):
    """Whether the request announces a body (a length above 0, or chunked)."""
    return "HTTP_TRANSFER_ENCODING" in environ or environ.get("CONTENT_LENGTH", "") not in ("", "0")


class BodyReader:
    """WSGI middleware: see the module's docstring."""

    def __init__(self, wsgi_app, timeout, slots, max_length=None, waiting=nullcontext):
        self.wsgi_app = wsgi_app
        self.timeout = timeout
        self.max_length = max_length
        self.waiting = waiting  # a context manager around a wait past PATIENCE_SECONDS
        self.slots = threading.BoundedSemaphore(slots)

    def __call__(self, environ, start_response):
        if not has_body(environ):
            return self.wsgi_app(environ, start_response)
        body = environ["wsgi.input"] = DeadlineBody(environ, self)
        result = self.wsgi_app(environ, start_response)
        if body.reading is not None and not body.reading.is_set():
            return _EndsAfterRead(result, body.reading)
        return result


class _EndsAfterRead:
    """The answer's bytes at once; the end of the iterable once the reader is done."""

    def __init__(self, result, reading):
        self._result = result
        self._reading = reading

    def __iter__(self):
        yield from self._result
        self._reading.wait()  # untimed: the client ends it by sending the rest or closing

    def close(self):
        if hasattr(self._result, "close"):
            self._result.close()


class DeadlineBody:
    """``wsgi.input`` of one request: the whole body, fetched on the first read."""

    def __init__(self, environ, reader):
        self._raw = environ["wsgi.input"]
        self._length = _content_length(environ)
        self._reader = reader
        self._deadline = time.monotonic() + reader.timeout
        self._buffer = None
        self.reading = None  # set once the reader thread is done

    def _body(self):
        if self._buffer is None:
            self._buffer = io.BytesIO(self._fetch())
        return self._buffer

    def _fetch(self):
        limit = self._reader.max_length
        if limit is not None and self._length is not None and self._length > limit:
            raise BodyTooLarge(f"the request body is over {limit} bytes")
        if not self._reader.slots.acquire(blocking=False):
            raise BodiesBusy("too many request bodies are being received, retry shortly")
        box = {}
        done = self.reading = threading.Event()
        # Not a pool: a reader stuck on a silent client would keep a pool's thread for good.
        threading.Thread(target=self._read_all, args=(box, done), daemon=True,
                         name="request-body").start()
        if not done.wait(PATIENCE_SECONDS):
            with self._reader.waiting():
                done.wait(max(0.0, self._deadline - time.monotonic()))
        if not done.is_set():
            raise BodyTimeout(f"the request body did not arrive within {self._reader.timeout:g} s")
        if "error" in box:
            raise box["error"]
        return box["data"]

    def _read_all(self, box, done):
        """On the reader thread: up to one byte over the limit, then give the slot back."""
        limit = self._reader.max_length
        want = self._length if self._length is not None else None
        parts, total = [], 0
        try:
            while True:
                size = CHUNK
                if want is not None:
                    size = min(size, want - total)
                if limit is not None:
                    size = min(size, limit + 1 - total)
                if size <= 0:
                    break
                chunk = self._raw.read(size)
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
            if limit is not None and total > limit:
                box["error"] = BodyTooLarge(f"the request body is over {limit} bytes")
            else:
                box["data"] = b"".join(parts)
        except Exception:  # the server's stream failed: as if the client went away (a 400)
            box["data"] = b""
        finally:
            self._reader.slots.release()
            done.set()

    def read(self, size=-1):
        return self._body().read(size)

    def readline(self, size=-1):
        return self._body().readline(size)

    def readlines(self, hint=-1):
        return self._body().readlines(hint)

    def __iter__(self):
        return iter(self._body())


def _content_length(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def release_database_connection():
    """End the request's read-only transaction, so its connection goes back to the pool.

    Loaded objects stay as they are (not expired): the views' writes check the row again in
    the statement itself (If-Match), and the next query starts a new transaction.
    Left alone when the session holds changes not yet written.
    """
    if not has_app_context():
        return
    session = db.session()
    if session.new or session.dirty or session.deleted or not session.in_transaction():
        return
    keep, session.expire_on_commit = session.expire_on_commit, False
    try:
        session.commit()
    finally:
        session.expire_on_commit = keep


@contextmanager
def waiting_for_a_body():
    """While the app's thread waits for a body: its database connection and its turn given back."""
    release_database_connection()
    with turns.waiting():
        yield


def init_app(app):
    """Read ``app``'s request bodies through ``BodyReader`` (settings from its config)."""
    config = app.config
    if not config["REQUEST_BODY_TIMEOUT"] > 0 or config["REQUEST_BODY_SLOTS"] < 1:
        raise ConfigError("REQUEST_BODY_TIMEOUT and REQUEST_BODY_SLOTS must be positive")
    app.wsgi_app = BodyReader(
        app.wsgi_app,
        timeout=config["REQUEST_BODY_TIMEOUT"],
        slots=config["REQUEST_BODY_SLOTS"],
        max_length=config["MAX_CONTENT_LENGTH"],
        waiting=waiting_for_a_body,
    )
