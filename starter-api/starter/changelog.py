"""Which codes changed between two data versions, from the log the triggers keep (migration 0005).

A cache made at one version can keep whatever the codes changed since did not
touch; this module says what they were. ``None`` means "not known": the versions
belong to different epochs (the table was recreated), the log no longer reaches
back that far, a bulk statement changed too many codes to list, or a version was
bumped with no log row (a hand-made ``UPDATE starter_data_version``). Callers
then treat everything as changed, as before the log existed.
"""

from dataclasses import dataclass

from sqlalchemy import text

from .models import split_tag

# Migration 0005 keeps this many versions of the log; a wider span is not asked for.
KEPT_VERSIONS = 1000
# More changed rows than this in one span: cheaper to treat everything as changed.
ROWS_MAX = 5000
SELECT_CHANGES = text(
    "SELECT version, pxcode, old_procedure, new_procedure FROM starter_pxcode_changes"
    " WHERE version > :since AND version <= :until ORDER BY version LIMIT :limit"
)
# The same for a raw DB-API cursor (psycopg2's parameter style), e.g. the version watch's.
SELECT_CHANGES_PYFORMAT = (
    "SELECT version, pxcode, old_procedure, new_procedure FROM starter_pxcode_changes"
    " WHERE version > %(since)s AND version <= %(until)s ORDER BY version LIMIT %(limit)s"
)


@dataclass(frozen=True)
class Change:
    """One code's change: its title ``before`` (None: it is new) and ``after`` (None: deleted)."""

    pxcode: str
    before: str | None
    after: str | None


def span(since, until):
    """The query arguments for the changes after tag ``since`` up to tag ``until``, or None.

    Tags are ``Versions.codes`` (``"<epoch>.<version>"``). None when no log can
    answer (other epochs, too wide a span, ``until`` older than ``since``).
    """
    (since_epoch, low), (until_epoch, high) = split_tag(since), split_tag(until)
    if since_epoch != until_epoch:
        return None
    if not 0 <= high - low <= KEPT_VERSIONS:
        return None
    return {"since": low, "until": high, "limit": ROWS_MAX + 1}


def versioned_from_rows(rows, args):
    """``(version number, Change)`` of each of ``rows`` (the query's), oldest first, or None unless
    they account for every version."""
    changes, versions = [], set()
    for version, pxcode, before, after in rows:
        if pxcode is None:  # a bulk statement: not listed
            return None
        versions.add(version)
        changes.append((int(version), Change(pxcode, before, after)))
    if len(changes) > ROWS_MAX or len(versions) != args["until"] - args["since"]:
        return None
    return tuple(changes)


def changes_between(session, since, until):
    """The changes of the codes after version ``since`` up to ``until`` (tags), or None if unknown."""
    versioned = versioned_changes_between(session, since, until)
    return None if versioned is None else tuple(change for _, change in versioned)


def versioned_changes_between(session, since, until):
    """``changes_between``, each with its version number (``versioned_from_rows``)."""
    args = span(since, until)
    if args is None:
        return None
    if args["since"] == args["until"]:
        return ()
    return versioned_from_rows(session.execute(SELECT_CHANGES, args).all(), args)
