"""Deep pages of the unfiltered listing by anchors that survive writes.

An anchor set is every ``SPACING``-th sort key of the whole table in one order
(the code, or the title then the code), from one ordered scan that also reads
the data version it saw (one statement: one snapshot). A write does not throw
it away: the change log (``starter.changelog``) says which keys came and went
since, and an anchor's rank at a later version is its rank then, plus the keys
inserted before it, minus those deleted before it (a changed title moves its
row in the title order: a delete and an insert). A page is then the nearest
anchor at or before it and an OFFSET of about ``SPACING`` rows. The descending
orders use the same anchors, counted from the end.

The anchors of an order are built when a page in its middle is first asked for
(that reader, and any meanwhile, wait for this one build: building them sooner
slowed every cold request, bench/README.md), and rebuilt by a background thread
once the changes since pile up (``REBUILD_CHANGES``). After that a reader waits
for a build only when the log cannot say what changed.
"""

import threading

from flask import current_app
from sqlalchemy import Integer, String, and_, bindparam, func, select, text, true, tuple_
from sqlalchemy.dialects import postgresql

from . import changelog
from .cache import ComputedCache
from .db import db
from .models import DataVersion, PxCode, split_tag

# One anchor every this many rows: a page costs an OFFSET of up to about this many.
SPACING = 500
# More changed keys than this since the anchors' version: rebuild them (in the background).
REBUILD_CHANGES = 200
ORDERS = {"pxcode": (PxCode.pxcode,), "procedure": (PxCode.procedure, PxCode.pxcode)}


class Anchors:
    """The anchor sets of one app, per order name (``ORDERS``), each built by one thread at a time."""

    def __init__(self):
        self._sets = {}  # order name -> (version tag, [key tuples at ranks 0, spacing, ...], spacing)
        self._changes = ComputedCache(64)  # (order, anchors' version, version) -> key changes
        self._locks = {name: threading.Lock() for name in ORDERS}
        self._rebuilding = set()
        self._threads = []
        self._guard = threading.Lock()

    def rows(self, order, start, limit, version):
        """The codes at ranks ``start`` .. ``start + limit - 1`` of ``order`` ascending, at ``version``."""
        (_, keys, spacing), deltas = self._usable(order, version)
        columns = ORDERS[order]
        inserted = sum(1 for _, delta in deltas if delta > 0)
        # The anchor's rank can only have grown by the inserts: this one is at or before ``start``.
        index = min((start - inserted) // spacing, len(keys) - 1) if start >= inserted else -1
        statement = select(PxCode).order_by(*columns).limit(limit)
        if index < 0 or not keys:
            return db.session.scalars(statement.offset(start)).all()
        anchor = keys[index]
        rank = index * spacing + _inserted_before(anchor, deltas)
        key = tuple_(*columns) if len(columns) > 1 else columns[0]
        bound = tuple_(*anchor) if len(columns) > 1 else anchor[0]
        statement = statement.where(key >= bound).offset(start - rank)
        return db.session.scalars(statement).all()

    def _usable(self, order, version):
        """``(anchor set, key changes since)`` for ``version``, building if none can serve."""
        known = self._sets.get(order)
        deltas = None if known is None else self._key_changes(order, known[0], version)
        if deltas is None:
            with self._locks[order]:  # one build; the others wait for it
                known = self._sets.get(order)
                deltas = None if known is None else self._key_changes(order, known[0], version)
                if deltas is None:
                    known = self._sets[order] = _build(order)
                    deltas = self._key_changes(order, known[0], version)
            if deltas is None:  # even the new anchors are out of the log's reach: none
                return (known[0], [], known[2]), ()
        elif len(deltas) > REBUILD_CHANGES or _span(known[0], version) > changelog.KEPT_VERSIONS // 2:
            self._rebuild_later(order)
        return known, deltas

    def _key_changes(self, order, since, until):
        return self._changes.get_or_compute((order, since, until), lambda: _key_changes(order, since, until))

    def prepare(self, order):
        """Start building ``order``'s anchors in the background if there are none yet: readers
        then wait for that build, not a second one."""
        if order not in self._sets:
            self._rebuild_later(order)

    def _rebuild_later(self, order):
        with self._guard:
            if order in self._rebuilding:
                return
            self._rebuilding.add(order)
            app = current_app._get_current_object()
            thread = threading.Thread(
                target=self._rebuild, args=(app, order, self._sets.get(order)),
                daemon=True, name=f"page-anchors-{order}",
            )
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _rebuild(self, app, order, replacing):
        try:
            with app.app_context():
                try:
                    with self._locks[order]:  # a reader that cannot do without waits for this build
                        if self._sets.get(order) is replacing:  # else a reader has just built them
                            self._sets[order] = _build(order)
                finally:
                    db.session.remove()
        except Exception:  # the old anchors still serve; a later reader asks again
            app.logger.exception("page anchors for %s not rebuilt", order)
        finally:
            with self._guard:
                self._rebuilding.discard(order)

    def close(self):
        """Wait for a rebuild under way (its thread ends by itself)."""
        for thread in list(self._threads):
            thread.join(timeout=30)

    def clear(self):
        self._sets.clear()
        self._changes.clear()


def _build(order):
    """``(version tag, keys, spacing)``: one ordered scan, with the version row in the same statement."""
    columns = ORDERS[order]
    number = (func.row_number().over(order_by=columns) - 1).label("n")
    ranked = select(*columns, number).subquery()
    statement = (
        select(DataVersion.epoch, DataVersion.version, *[ranked.c[c.key] for c in columns])
        .select_from(DataVersion)
        .outerjoin(ranked, and_(true(), ranked.c.n % SPACING == 0))
        .where(DataVersion.id == 1)
        .order_by(ranked.c.n)
    )
    rows = db.session.execute(statement).all()
    keys = [tuple(row[2:]) for row in rows if row[2] is not None]
    return f"{rows[0][0]}.{rows[0][1]}", keys, SPACING


def _span(since, until):
    return abs(split_tag(until)[1] - split_tag(since)[1])


def _key_changes(order, since, until):
    """``[(key, +1 or -1)]``: the keys of ``order`` present at ``until`` and not at ``since`` (+1),
    and the reverse (-1); None when the log cannot say. ``until`` may be the older version."""
    forward = _span_order(since, until)
    if forward is None:
        return None
    low, high = (since, until) if forward else (until, since)
    changes = changelog.changes_between(db.session, low, high)
    if changes is None:
        return None
    first, last = {}, {}
    for change in changes:
        first.setdefault(change.pxcode, change.before)
        last[change.pxcode] = change.after
    sign = 1 if forward else -1
    deltas = []
    for code, before in first.items():
        old, new = _key(order, code, before), _key(order, code, last[code])
        if old != new:
            deltas += [(key, delta * sign) for key, delta in ((old, -1), (new, 1)) if key is not None]
    return deltas


def _span_order(since, until):
    """True if ``since`` is at or before ``until``, False if after, None if of different epochs."""
    (since_epoch, since_number), (until_epoch, until_number) = split_tag(since), split_tag(until)
    if since_epoch != until_epoch:
        return None
    return since_number <= until_number


def _key(order, code, title):
    if title is None:
        return None
    return (code,) if order == "pxcode" else (title, code)


UNNESTED = {
    "pxcode": "SELECT coalesce(sum(d), 0) FROM unnest(:k1, :d) AS c(k1, d) WHERE c.k1 < :a1",
    "procedure": "SELECT coalesce(sum(d), 0) FROM unnest(:k1, :k2, :d) AS c(k1, k2, d)"
    " WHERE (c.k1, c.k2) < (:a1, :a2)",
}


def _inserted_before(anchor, deltas):
    """The net number of keys that came before ``anchor`` (inserts minus deletes).

    Compared by the database, in its collation (the listing's order). SQLite's
    (BINARY: code point order) is Python's, so there the sum is made here.
    """
    if not deltas:
        return 0
    if db.engine.dialect.name != "postgresql":
        return sum(delta for key, delta in deltas if key < anchor)
    width = len(anchor)
    order = "pxcode" if width == 1 else "procedure"
    array = postgresql.ARRAY(String)
    statement = text(UNNESTED[order]).bindparams(
        *[bindparam(f"k{i + 1}", [key[i] for key, _ in deltas], type_=array) for i in range(width)],
        bindparam("d", [delta for _, delta in deltas], type_=postgresql.ARRAY(Integer)),
        *[bindparam(f"a{i + 1}", anchor[i]) for i in range(width)],
    )
    return int(db.session.scalar(statement))
