"""No request waits on a database that does not answer.

``DB_STATEMENT_TIMEOUT`` is enforced by PostgreSQL itself, so it cannot help
when the server is stuck (stopped, or a peer that accepts TCP and never
answers). Here every wait on PostgreSQL happens in the client, with deadlines:

* psycopg2 lets a process replace libpq's blocking waits by a callback
  (``set_wait_callback``, its "green" mode). Ours waits in ``select`` with a
  deadline: ``DB_CONNECT_TIMEOUT`` for a connect (libpq ignores its own
  ``connect_timeout`` in this mode), ``DB_STATEMENT_TIMEOUT`` plus a little for
  a statement (so the server's own cancel comes first when it is alive).
* A wait that lasts longer than ``SUSPECT_AFTER``, or any connection failure,
  wakes a background probe: a fresh connection and ``SELECT 1`` within
  ``DB_PROBE_TIMEOUT``, and ``SELECT 1`` on the connection the probe keeps open
  (its last good one), asked first. A fresh connection that does not answer in
  time is not the verdict while the open one answers: on a loaded machine
  PostgreSQL starts a backend slowly though it answers; a hung database (or
  network) answers on neither, and no answer on the open one is enough.
  If the probe fails, the database is *down* for this process:
  the waits in flight give up at once (both request threads of a worker are
  freed long before their own deadlines, so ``/healthz`` gets a thread), new
  connections and queries fail without touching the network, and requests
  that need the database get the 503 at once. The probe then runs every
  ``PROBE_INTERVAL`` until the database answers, which ends the outage.
* State changes are logged (down, back up after N s with the count of
  refused requests), not every refused request.

The callback is process-wide, but only connections made through
``DatabaseHealth.connection_class`` (the app's engines and the version watch)
get deadlines; any other psycopg2 connection waits as libpq would. psycopg2
refuses COPY in this mode: ``blocking_waits()`` lifts it for the importer.
"""

import logging
import os
import select
import threading
import time
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions as pgext
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

EXTENSION = "starter_database_health"
SUSPECT_AFTER = 0.1  # seconds a wait may last before the probe looks at the database
CHECK_EVERY = 0.05  # how often a long wait looks whether the probe found the database down
PROBE_INTERVAL = 0.25  # seconds between probes while the database is down
STATEMENT_GRACE = 0.5  # past DB_STATEMENT_TIMEOUT: the server's own cancel answers first
ISOLATED_LOG_INTERVAL = 10.0  # at most one line per this many seconds for 503s outside an outage
ANSWERED, TIMED_OUT = "answered", "timed out"  # what the probe's kept connection said
CONNECTED = (pgext.STATUS_READY, pgext.STATUS_BEGIN, pgext.STATUS_PREPARED)

log = logging.getLogger(__name__)


class DatabaseUnavailable(psycopg2.OperationalError):
    """Raised instead of waiting: the database did not answer in time, or is known to be down.

    An ``OperationalError``, so SQLAlchemy wraps it like any lost connection
    (invalidated, the request answered 503). psycopg2 closes the connection.
    """


def wait_for(connection):
    """The process-wide psycopg2 wait callback: the connection's own deadlines, if it has any."""
    health = getattr(connection, "health", None)
    if health is None:
        _wait_unbounded(connection)
    else:
        health.wait(connection)


def _wait_unbounded(connection):
    while True:
        state = connection.poll()
        if state == pgext.POLL_OK:
            return
        _select(connection, state, None)


def _select(connection, state, timeout):
    fd = connection.fileno()
    if state == pgext.POLL_READ:
        select.select([fd], [], [], timeout)
    elif state == pgext.POLL_WRITE:
        select.select([], [fd], [], timeout)
    else:
        raise psycopg2.OperationalError(f"unexpected psycopg2 poll state {state}")


def install_wait_callback():
    if pgext.get_wait_callback() is not wait_for:
        pgext.set_wait_callback(wait_for)


@contextmanager
def blocking_waits():
    """Let libpq wait by itself while the block runs: psycopg2 refuses COPY under a wait callback.

    Process-wide, so only for a command's own thread (the importer), never in the
    server. Connections made inside are blocking ones; make them inside and close
    them before leaving.
    """
    previous = pgext.get_wait_callback()
    pgext.set_wait_callback(None)
    try:
        yield
    finally:
        pgext.set_wait_callback(previous)


class DatabaseHealth:
    """One process's view of whether its database answers, and the deadlines of its waits."""

    def __init__(self, url, connect_args, connect_timeout, statement_timeout_ms, probe_timeout,
                 logger=log):
        self.connect_timeout = float(connect_timeout)
        self.statement_limit = (
            statement_timeout_ms / 1000 + STATEMENT_GRACE if statement_timeout_ms > 0 else None
        )
        self.probe_timeout = float(probe_timeout)
        self.logger = logger
        self.connection_class = _connection_class(self, probing=False)
        self._probe_engine = create_engine(
            url,
            poolclass=NullPool,
            pool_reset_on_return=None,
            connect_args={**connect_args, "connection_factory": _connection_class(self, probing=True)},
        )
        self._down_since = None  # time.monotonic() when the probe found it down
        self._down_reason = None
        self.refused = 0  # requests answered 503 during the current outage
        self._isolated = [0, 0.0]  # 503s outside an outage since the last line, when it was logged
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._kept = None  # the probe's last good connection, asked first (a hung server: no answer)
        self._kept_pid = None
        self._probe_limit = self.probe_timeout  # of the probe's current question (one at a time)
        self._slow_logged_at = -ISOLATED_LOG_INTERVAL
        self._wake = threading.Event()
        self._stopped = False
        self._thread = None
        self._pid = None

    @property
    def down(self):
        return self._down_since is not None

    def down_for(self):
        """Seconds since the probe found the database down; 0 while it answers."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    # --- the waits (run in the thread that waits) ---

    def check(self):
        if self._down_since is not None:
            raise DatabaseUnavailable(f"the database is down ({self._down_reason})")

    def wait(self, connection):
        probing = connection.probing
        if not probing:
            self.check()
        if probing:
            limit = self._probe_limit
        elif connection.status not in CONNECTED:
            limit = self.connect_timeout
        else:
            limit = self.statement_limit
        started = time.monotonic()
        deadline = None if limit is None else started + limit
        suspected = probing
        while True:
            try:
                state = connection.poll()
            except psycopg2.OperationalError:
                if not probing:
                    self.suspect()
                raise
            if state == pgext.POLL_OK:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if not probing:
                    self.suspect()
                raise DatabaseUnavailable(f"the database did not answer within {limit:g} s")
            if not suspected and now - started >= SUSPECT_AFTER:
                self.suspect()
                suspected = True
            if not probing:
                self.check()  # the probe may have found it down meanwhile
            step = CHECK_EVERY if suspected else SUSPECT_AFTER - (now - started)
            if deadline is not None:
                step = min(step, deadline - now)
            _select(connection, state, max(step, 0.001))

    # --- the probe ---

    def suspect(self):
        """Something looks wrong (a long wait, a failed connection): have the probe look."""
        self._ensure_probing()
        self._wake.set()

    def check_now(self):
        """Probe in this thread (``/readyz``); return True if the database answers."""
        if self.down:
            return False
        self._record(*self._probe())
        return not self.down

    def _probe(self):
        """``(answers, reason)``. One probe at a time (the probe thread, ``/readyz``).

        The kept connection first: no answer there in time is a hung database (or network);
        an error there (a restarted server) leaves the verdict to the fresh connection. Then
        the fresh connection: a failure is the verdict, unless it only did not answer in time
        while the kept one did (a loaded machine starts backends slowly). With no kept one to
        ask (a process's first probe, e.g. a command's), a slow start cannot be told from a hung
        server: the fresh connection then has DB_CONNECT_TIMEOUT, as any new connection has.
        """
        with self._probe_lock:
            self._probe_limit = self.probe_timeout
            kept = self._ask_kept()
            if kept is TIMED_OUT:
                return False, f"no answer within {self.probe_timeout:g} s on an open connection"
            if kept is not ANSWERED:
                self._probe_limit = max(self.probe_timeout, self.connect_timeout)
            fresh = None
            try:
                fresh = self._probe_engine.raw_connection()
                _select_1(fresh)
            except Exception as exc:
                if fresh is not None:
                    fresh.close()
                if kept is not ANSWERED or not isinstance(_cause(exc), DatabaseUnavailable):
                    return False, _reason(exc)
                now = time.monotonic()
                if now - self._slow_logged_at >= ISOLATED_LOG_INTERVAL:
                    self._slow_logged_at = now
                    self.logger.warning("database slow to connect (%s) but answering on an open"
                                        " connection: not down", _reason(exc))
                return True, None
            if self._kept is None:
                self._kept, self._kept_pid = fresh, os.getpid()  # the next probe's first question
            else:
                fresh.close()
            return True, None

    def _ask_kept(self):
        """``SELECT 1`` on the kept connection: ANSWERED, TIMED_OUT, or None (none, or it failed:
        dropped, as is one that timed out, whose unfinished query leaves it unusable)."""
        kept, self._kept = self._kept, None
        if kept is None or self._kept_pid != os.getpid():
            return None  # none, or a forked parent's: its socket is not this process's to use
        try:
            _select_1(kept)
        except Exception as exc:
            kept.close()
            return TIMED_OUT if isinstance(exc, DatabaseUnavailable) else None
        self._kept = kept
        return ANSWERED

    def _ensure_probing(self):
        with self._lock:
            if self._stopped:
                return
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            self._pid = os.getpid()  # a forked child does not inherit the thread
            self._thread = threading.Thread(target=self._run, name="database-probe", daemon=True)
            self._thread.start()

    def _run(self):
        while not self._stopped:
            # Up: sleep until something looks wrong. Down: look again every PROBE_INTERVAL.
            self._wake.wait(PROBE_INTERVAL if self.down else None)
            if self._stopped:
                return
            self._wake.clear()
            self._record(*self._probe())

    def _record(self, answers, reason):
        with self._lock:
            if answers and self._down_since is not None:
                seconds = time.monotonic() - self._down_since
                refused, self._down_since, self.refused = self.refused, None, 0
                self.logger.info(
                    "database back up after %.1f s; %d requests answered 503 meanwhile",
                    seconds, refused,
                )
            elif not answers and self._down_since is None:
                self._down_since, self._down_reason = time.monotonic(), reason
                self.logger.warning(
                    "database down (%s): answering 503 at once until it answers again", reason
                )
            else:
                return
        if not answers:
            # Found by /readyz too: the probe thread looks again until it answers, whoever found it.
            self.suspect()

    # --- the 503s ---

    def note_refused(self, reason):
        """Count a request answered 503; outside an outage, log it (at most every few seconds)."""
        with self._lock:
            if self._down_since is not None:
                self.refused += 1
                return
            count, logged_at = self._isolated
            now = time.monotonic()
            if now - logged_at < ISOLATED_LOG_INTERVAL:
                self._isolated[0] = count + 1
                return
            self._isolated = [0, now]
        more = f" (and {count} more since the last such line)" if count else ""
        self.logger.warning("database unavailable, answered 503: %s%s", reason, more)
        self.suspect()

    def stop(self):
        with self._lock:
            self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._probe_lock:
            if self._kept is not None and self._kept_pid == os.getpid():
                self._kept.close()
            self._kept = None
        self._probe_engine.dispose()


def _select_1(connection):
    cursor = connection.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchone()
    cursor.close()


def _cause(exc):
    """The DBAPI error under SQLAlchemy's wrapper, if any."""
    return getattr(exc, "orig", None) or exc


def _reason(exc):
    detail = str(_cause(exc)).strip().splitlines()
    return detail[0] if detail else type(exc).__name__


def _connection_class(health, probing):
    """A psycopg2 connection class carrying ``health`` (its deadlines) to the wait callback."""

    class GuardedConnection(pgext.connection):
        def __new__(cls, *args, **kwargs):
            if not probing:
                health.check()  # known down: fail before any socket (or object) is made
            return super().__new__(cls, *args, **kwargs)

        def __init__(self, *args, **kwargs):
            try:
                super().__init__(*args, **kwargs)
            except psycopg2.OperationalError:
                if not probing:
                    health.suspect()
                raise

    GuardedConnection.health = health
    GuardedConnection.probing = probing
    return GuardedConnection


def init_app(app, connect_args):
    """Give ``app`` (PostgreSQL) its ``DatabaseHealth``; return the connection class its engines use."""
    config = app.config
    health = DatabaseHealth(
        config["SQLALCHEMY_DATABASE_URI"],
        connect_args,
        config["DB_CONNECT_TIMEOUT"],
        config["DB_STATEMENT_TIMEOUT"],
        config["DB_PROBE_TIMEOUT"],
        logger=app.logger,
    )
    install_wait_callback()
    app.extensions[EXTENSION] = health
    return health


def of(app):
    """``app``'s ``DatabaseHealth``, or None (SQLite)."""
    return app.extensions.get(EXTENSION)
