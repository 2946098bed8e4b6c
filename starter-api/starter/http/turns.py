"""At most ``SERVER_THREADS`` requests of a worker run at once, however many threads the server lends it.

granian runs a WSGI app on its blocking threads and starts another whenever requests queue, up to
``SERVER_THREADS`` + ``REQUEST_BODY_SLOTS`` (serve.py: the spare ones are for requests whose
bodies stall). Under load every one of them ran the app at once, dozens per worker contending for
one GIL: fewer requests a second, and a long tail (bench/README.md, "Turns").

``Turns`` (WSGI middleware, under the request observer) lets a request in when one of
``SERVER_THREADS`` turns is free; the others wait for one, parked, before any of their code runs,
and get it first come, first served: a turn given back goes to the request that has waited
longest, never to one that just came (with a semaphore they jumped the line, and the tail grew).
A request gives its turn back while it waits for something that may take long and needs no CPU
(``waiting``: its body from a slow client, an identical request's answer), so stalled clients
never hold the turns. A request waiting on the database keeps its turn, as a thread of its own
would: the statement and probe deadlines (``dbhealth``) bound that wait.
"""

import collections
import threading
from contextlib import contextmanager, nullcontext

from flask import current_app, has_app_context

EXTENSION = "starter_turns"


class Turns:
    """WSGI middleware: see the module's docstring."""

    def __init__(self, wsgi_app, turns):
        if turns < 1:
            raise ValueError("SERVER_THREADS must be at least 1")
        self.wsgi_app = wsgi_app
        self._free = turns
        self._waiters = collections.deque()  # a lock each, held until its turn is handed over
        self._lock = threading.Lock()
        self._holder = threading.local()  # whether this thread holds a turn

    def __call__(self, environ, start_response):
        self._take()
        try:
            # The answer's iterable is the server's to go through, after the turn is given back.
            return self.wsgi_app(environ, start_response)
        finally:
            self._give()

    @contextmanager
    def waiting(self):
        """Give this thread's turn (if it holds one) back for the block, and wait for one after it."""
        if not getattr(self._holder, "holds", False):
            yield
            return
        self._give()
        try:
            yield
        finally:
            self._take()

    def _take(self):
        with self._lock:
            if self._free:
                self._free -= 1
                waiter = None
            else:
                waiter = threading.Lock()
                waiter.acquire()
                self._waiters.append(waiter)
        if waiter is not None:
            waiter.acquire()  # released by _give: the turn is this thread's, first come first served
        self._holder.holds = True

    def _give(self):
        self._holder.holds = False
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1


def init_app(app):
    """Put ``SERVER_THREADS`` turns in front of ``app``."""
    turns = Turns(app.wsgi_app, app.config["SERVER_THREADS"])
    app.wsgi_app = app.extensions[EXTENSION] = turns


def waiting(app=None):
    """``Turns.waiting`` of ``app``'s turns (default: the current app's, if there is one): a context
    manager, one that does nothing when there are no turns."""
    if app is None and has_app_context():
        app = current_app
    turns = None if app is None else app.extensions.get(EXTENSION)
    return nullcontext() if turns is None else turns.waiting()
