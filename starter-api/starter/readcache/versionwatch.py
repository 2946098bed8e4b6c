"""This process's view of the data versions, kept current by PostgreSQL notifications.

A trigger announces every change of ``starter_data_version`` on the channel
of the same name (migration 0003), whoever made it: a worker of this or
another replica, or ``psql``. A thread per process listens, re-reads the row
when told, and re-reads it anyway every ``max_stale / 4`` seconds. A version
counts as known only while it was confirmed within ``max_stale`` seconds, so a
lost connection or a database that stops answering turns the watch off (the
callers then ask the database themselves) instead of leaving it stale.

When the codes' version moves, the watch also reads which codes changed (the change
log, ``starter.changelog``) before it makes the new version current, so a cached
answer that depends on one code can outlive writes to the others (``unchanged``). A commit of
this process that read the versions and the log itself, before committing, installs them at once
(``install_own``): its next request need not wait for the notification.
"""

import logging
import os
import select
import threading
import time

from sqlalchemy import create_engine
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import NullPool

from .. import changelog
from ..models import DataVersion, Versions, split_tag

CHANNEL = "starter_data_version"
# Run on the raw connection (it also LISTENs): the model's query, compiled once.
READ_VERSIONS = str(
    DataVersion.select_current().compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
)
# libpq keepalives: a silently dropped connection is noticed in seconds, not hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2}
APPLICATION_NAME = "starter-api version watch"  # how pg_stat_activity shows it

# How the database orders the codes and titles: (provider, collation) of each column.
# A page's window (``depends.Window``) compares keys in Python, which matches only code point order.
READ_COLLATIONS = """
SELECT CASE WHEN c.collname = 'default' THEN d.datlocprovider ELSE c.collprovider END,
       CASE WHEN c.collname = 'default' THEN d.datcollate ELSE c.collcollate END
FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation, pg_database d
WHERE d.datname = current_database() AND a.attrelid = 'starter_pxcodes'::regclass
  AND a.attname IN ('pxcode', 'procedure')
"""
CODE_POINT_COLLATIONS = frozenset({"c", "posix", "c.utf8", "c.utf-8"})

# Changes remembered, at most: past this the history starts afresh (everything older counts
# as changed), so its memory stays small whatever the writes.
HISTORY_CHANGES_MAX = 10_000

log = logging.getLogger(__name__)


class History:
    """Which codes changed at which version, since ``floor``, in one epoch of the table.

    The watch's thread, and a worker's own commit (``VersionWatch.install_own``), add to it
    under the watch's lock, only versions up to the one about to be made current; a reader may
    see a change a little early, which only ever flushes more.
    """

    def __init__(self, epoch, floor):
        self.epoch = epoch
        self.floor = floor  # before it, nothing is known: everything counts as changed
        self.upto = floor  # the changes are known up to here
        self.changed_at = {}  # pxcode -> the last version it changed at (or later)
        self.changes = []  # (version, changelog.Change), oldest first

    def add(self, versioned, until):
        """Bring it up to version number ``until`` with ``versioned`` (``(version, Change)``, every
        change after a version it had reached, up to ``until``): those it has not seen yet, each
        at ``until``, the newest of the span, so that an answer made inside it is flushed too.
        False, and nothing added, if it would then remember more than ``HISTORY_CHANGES_MAX``."""
        new = [change for version, change in versioned if version > self.upto]
        if len(self.changes) + len(new) > HISTORY_CHANGES_MAX:
            return False
        for change in new:
            self.changed_at[change.pxcode] = until
            self.changes.append((until, change))
        self.upto = max(self.upto, until)
        return True

    def unchanged(self, depends_on, since, until, same_count=False):
        """Whether what ``depends_on`` (a code, a filter: ``depends.Matching``, a page:
        ``depends.Window``) names kept its rows from version number ``since`` to ``until``;
        ``same_count``: and no code was created or deleted meanwhile."""
        if not self.floor <= since <= until <= self.upto:
            return False
        if isinstance(depends_on, str):
            return self.changed_at.get(depends_on, since) <= since
        changes = self.changes
        for i in range(len(changes) - 1, -1, -1):  # newest first, down to ``since``
            version, change = changes[i]
            if version <= since:
                break
            if depends_on.touched_by(change) or (same_count and (change.before is None or change.after is None)):
                return False
        return True


class VersionWatch:
    def __init__(self, url, connect_args, max_stale):
        self._engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={**connect_args, **KEEPALIVES, "application_name": APPLICATION_NAME},
        )
        self.max_stale = max_stale
        self._heartbeat = max_stale / 4
        self._known = None  # (Versions, time.monotonic() of the read, changes written since)
        self._known_at = None  # the last read, even one a write of this process set aside
        self._history = None
        self._invalidations = 0
        self._generation = 0  # a thread whose generation is past gives up
        self._thread = None
        self._pid = None
        self._progress = 0.0
        self._wake_fds = None
        self._lock = threading.Lock()
        self._install_lock = threading.Lock()  # _known and the history, against a write's own
        self._stopped = False
        self.byte_order = False  # the database orders keys by code point (read at each connection)

    def current(self):
        """Return the versions confirmed within ``max_stale`` seconds, else None."""
        known = self.known()
        return None if known is None else known[0]

    def known(self):
        """``(versions, written)``: the versions confirmed within ``max_stale`` seconds and the
        changes this process wrote since (not yet in them), else None."""
        known = self._known
        if known is not None and time.monotonic() - known[1] < self.max_stale:
            return known[0], known[2]
        self._ensure_watching()
        return None

    def recent_versions(self, limit):
        """The version tags the history covers, newest first, at most ``limit``."""
        history = self._history
        if history is None:
            return []
        low = max(history.floor, history.upto - limit + 1)
        return [f"{history.epoch}.{number}" for number in range(history.upto, low - 1, -1)]

    def unchanged(self, depends_on, since, until, same_count=False):
        """Whether the rows ``depends_on`` names (a code, a filter, a page) are the same at version
        tag ``until`` (a current one) as at ``since``, as the change log says (``same_count``: and
        the number of codes); False whenever it cannot tell."""
        history = self._history
        if history is None:
            return False
        (since_epoch, since_number), (until_epoch, until_number) = split_tag(since), split_tag(until)
        if not since_epoch == until_epoch == history.epoch:
            return False
        if not self.can_compare(depends_on):
            return False
        return history.unchanged(depends_on, since_number, until_number, same_count)

    def can_compare(self, depends_on):
        """Whether changes can be tested against ``depends_on`` in Python: a page's window only
        where the database orders its keys by code point, as Python does."""
        return self.byte_order or not getattr(depends_on, "byte_order", False)

    def confirmed_age(self):
        """Seconds since the versions were last read, or None before the first read."""
        known = self._known_at
        return None if known is None else time.monotonic() - known

    def invalidate(self, written=None):
        """This process has just committed a write: forget the versions until read again, or,
        given ``written`` (every row the write changed, as ``changelog.Change``s), keep them, with
        those changes marked made until the watch has read the new version (``install_own`` when
        the write read the versions itself)."""
        with self._install_lock:
            self._invalidations += 1
            known = self._known
            if written is None or known is None:
                self._known = None
            else:
                self._known = (known[0], known[1], known[2] | written)
        self._wake()

    def history_tag(self):
        """The version tag the history reaches: where a commit's own reading of the change log
        starts (``install_own``); None when there is none."""
        history = self._history
        return None if history is None else f"{history.epoch}.{history.upto}"

    def install_own(self, row, since, versioned, written):
        """This process has just committed a write that read, in its transaction and after its
        writes, the versions ``row`` (``DataVersion.select_current``'s) and the change log after
        version tag ``since`` up to them (``versioned``, ``changelog.versioned_changes_between``'s;
        None: unknown). Make them known at once, ``written`` (the changes it declared) no longer
        pending, so that the next request reads this write from the cache instead of waiting for
        the watch; as ``invalidate(written)`` whenever they cannot extend what the watch knows."""
        epoch, number = str(row[0]), int(row[1])
        since_epoch, since_number = split_tag(since)
        with self._install_lock:
            known, history = self._known, self._history
            installed = (
                versioned is not None and known is not None and history is not None
                and history.epoch == epoch == since_epoch and history.upto >= since_number
            )
            if installed:
                if not history.add(versioned, number):
                    self._history = History(epoch, number)  # too much: everything before counts as changed
                if split_tag(known[0].codes)[1] >= number:  # the watch, or a later commit, got further
                    self._known = (known[0], known[1], known[2] - written)
                else:
                    self._known = (Versions.of(*row), time.monotonic(), known[2] - written)
                self._invalidations += 1  # a read the watch has under way may be older: not installed
        if installed:
            self._wake()
        else:
            self.invalidate(written)

    def stop(self):
        """End the watch (its thread exits at its next wake-up); ``current()`` is None from now."""
        with self._lock:
            self._stopped = True
            self._generation += 1
            self._known = None
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._engine.dispose()

    # --- the listening thread ---

    def _ensure_watching(self):
        with self._lock:
            if self._stopped:
                return
            pid = os.getpid()
            running = (
                self._thread is not None
                and self._pid == pid  # a forked child does not inherit the thread
                and self._thread.is_alive()
                # A thread stuck on a database that stopped answering is left behind.
                and time.monotonic() - self._progress < 2 * self.max_stale
            )
            if running:
                return
            if self._pid != pid:
                self._wake_fds = os.pipe()
                for fd in self._wake_fds:
                    os.set_blocking(fd, False)
            self._generation += 1
            self._pid = pid
            self._progress = time.monotonic()
            self._thread = threading.Thread(
                target=self._run, args=(self._generation,), name="version-watch", daemon=True
            )
            self._thread.start()

    def _wake(self):
        fds = self._wake_fds
        if fds is not None and self._pid == os.getpid():
            try:
                os.write(fds[1], b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is full: a wake-up is pending anyway

    def _run(self, generation):
        failures = 0
        while generation == self._generation:
            try:
                self._listen(generation)
            except Exception as exc:  # any failure: the watch is off until reconnected
                if generation != self._generation:
                    return
                if failures == 0:  # once per outage, on one line
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    log.warning("version watch lost the database (%s); reconnecting", reason)
                failures += 1
            if generation == self._generation:
                self._known = None
            self._progress = time.monotonic()
            time.sleep(min(0.05 * 2**min(failures, 5), self._heartbeat))

    def _listen(self, generation):
        connection = self._engine.raw_connection()
        try:
            dbapi = connection.driver_connection
            dbapi.autocommit = True
            with dbapi.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")  # before the first read: no change slips by
                self.byte_order = _orders_by_code_point(cursor)
                wake = self._wake_fds[0]
                while generation == self._generation:
                    dbapi.notifies.clear()
                    self._read(cursor, generation)
                    if dbapi.notifies:
                        # Heard while reading (psycopg2 takes them off the socket then): it may
                        # be of a newer version than the one read, so read again at once.
                        continue
                    readable, _, _ = select.select([dbapi, wake], [], [], self._heartbeat)
                    if wake in readable:
                        _drain(wake)
                    dbapi.poll()
                    dbapi.notifies.clear()
        finally:
            connection.invalidate()

    def _read(self, cursor, generation):
        invalidations = self._invalidations
        cursor.execute(READ_VERSIONS)
        row = cursor.fetchone()
        self._follow_changes(cursor, str(row[0]), int(row[1]))
        now = time.monotonic()
        self._progress = now
        # Installed only if no write of this process committed meanwhile (it would
        # have woken us: the next round reads again).
        self._known_at = now
        with self._install_lock:
            if generation == self._generation and invalidations == self._invalidations:
                self._known = (Versions.of(*row), now, frozenset())

    def _follow_changes(self, cursor, epoch, number):
        """Bring the history up to version ``number``: before the version is made current."""
        history = self._history
        if history is None or history.epoch != epoch:
            self._history = History(epoch, number)
            return
        if number <= history.upto:  # a commit of this process may have brought it further
            return
        args = changelog.span(f"{epoch}.{history.upto}", f"{epoch}.{number}")
        versioned = None
        if args is not None:
            cursor.execute(changelog.SELECT_CHANGES_PYFORMAT, args)
            versioned = changelog.versioned_from_rows(cursor.fetchall(), args)
        with self._install_lock:  # a commit of this process may have added to it meanwhile
            if versioned is None or not history.add(versioned, number):
                self._history = History(epoch, number)  # unknown, or too much: everything changed


def _orders_by_code_point(cursor):
    """Whether the database sorts codes and titles by code point, as Python compares them."""
    try:
        cursor.execute(READ_COLLATIONS)
        rows = cursor.fetchall()
    except Exception:  # no table yet, an older server: compare nothing in Python
        return False
    return len(rows) == 2 and all(
        provider == "b" or (provider == "c" and (collate or "").lower() in CODE_POINT_COLLATIONS)
        for provider, collate in rows
    )


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
