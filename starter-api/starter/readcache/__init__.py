"""The read cache: repeated reads answered before Flask, from the app's own answers.

A view that calls ``allow_replay(version)`` declares its answer a function of the URL and the
codes' data version alone, the same for every user who may read; ``depends_on=pxcode``, a function
of that one code's row (an item), which writes to other codes leave current; ``depends_on=
depends.Matching(words, prefix)``, of the rows a filter selects (a search), which writes to rows
it selects neither before nor after leave current; ``depends_on=depends.Window(...)``, of a page
of every code: its rows and the total, so that a write outside its rows' keys leaves it current,
and a code created or deleted after it only changes its total (re-rendered here). The middleware
(``middleware.ReadCache``) keeps such answers (200 and 304, per worker process) and serves the next
identical request itself when all of these hold:

* the version it was made at is still current, as the version watch knows it
  (``versionwatch``: PostgreSQL notifications; never older than ``READ_CACHE_MAX_STALE``), or,
  for an answer made of one code, of a filter's codes or of a page's rows, the change log says no
  version since changed that code, a row the filter selects, before or after, or a row of the
  page (a page whose total alone changed is replayed with the new total and the version's ETag:
  the bytes Flask would answer);
* the request's credentials are ones the app verified recently, and no user changed since
  (``auth.authenticate`` given the users' version: no hash, no query);
* the rate limits admit it, counted in flask-limiter's own buckets (``admission``).

Anything else (a first request, new credentials, CORS, Range, If-Match, a limit reached, the
watch without a connection) goes to Flask untouched, which answers it and any error, and refills
the cache. Answers are captured from Flask, so a replay carries the same bytes and headers; only
the rate-limit headers are made fresh. On SQLite (no notifications) and with ``READ_CACHE=off``
every request goes through Flask. How fresh a replay is: docs/read-path.md.
"""

import functools

from flask import current_app, has_app_context, request
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from .. import changelog, limits, observability
from ..changelog import Change
from ..auth import authenticate
from ..config import ConfigError
from ..db import db, engine_options
from ..http import turns
from ..http.conditional import etag_of
from ..models import DataVersion, Versions
from .middleware import REPLAYABLE, ReadCache
from .versionwatch import VersionWatch

EXTENSION = "starter_read_cache"
HELD_TAGS = 8  # of a revalidation's tags, at most this many are looked up
# Of those, this many are digested with each of the last FOREIGN_VERSIONS versions (a tag another
# process made): bounded, as any client may send tags.
FOREIGN_TAGS = 2
FOREIGN_VERSIONS = 64
WRITTEN = "starter.readcache.written"  # session.info: the changes the transaction declared (wrote)
OWN_VERSIONS = "starter.readcache.own_versions"  # session.info: what it read of them before committing


def allow_replay(version, depends_on=None):
    """Let the read cache replay this request's answer while the codes are at ``version``, or,
    with ``depends_on`` (a code, as stored, or a ``depends.Matching``), while those rows are as
    they were at ``version``. Called again, the last call counts."""
    request.environ[REPLAYABLE] = (version, request.endpoint, depends_on)


def still_current(depends_on, since, versions):
    """Whether an answer made at version tag ``since`` of the rows ``depends_on`` names (see
    ``allow_replay``) reads the same at ``versions`` (``models.Versions``), as this process's
    watch knows; False whenever it cannot tell (no read cache, the whole table)."""
    cache = of(current_app)
    if cache is None or depends_on is None or getattr(depends_on, "total", versions.count) != versions.count:
        return False
    return since == versions.codes or cache.watch.unchanged(depends_on, since, versions.codes)


def version_of_tag(is_tag, versions, depends_on, limit):
    """The version tag, among the last ``limit`` this process's watch covers, at which
    ``is_tag(version)`` holds (a tag another process made of the same URL) and since which
    nothing ``depends_on`` names changed, nor the number of codes: its answer then reads as the
    one at ``versions`` now. None if there is none, or the watch cannot tell."""
    cache = of(current_app)
    if cache is None or depends_on is None:
        return None
    watch = cache.watch
    for version in watch.recent_versions(limit):
        if is_tag(version):
            unchanged = version == versions.codes or watch.unchanged(depends_on, version, versions.codes, same_count=True)
            return version if unchanged else None
    return None


def held_tag_still_current(depends, tag, versions, note_depends):
    """``(version, depends_on, held)`` of a tag ``held`` the request's ``If-None-Match`` holds, made of
    this URL at an earlier version than ``tag``'s (by this process, as ``depends`` (``depends.ByTag``)
    knows, or by another one: ``version_of_tag``), that no write since changed, else None.
    ``note_depends()`` makes what ``tag``'s page depends on known to ``depends`` (renders it once)."""
    if request.if_match or not request.if_none_match or request.if_none_match.contains_weak(tag):
        return None
    held_tags = list(request.if_none_match.as_set(include_weak=True))[:HELD_TAGS]
    for held in held_tags:
        made = depends.made(held)
        # The tag digests its version and URL: one of this URL's, not another page's.
        if made is not None and etag_of(made[0], request.url) == held and still_current(made[1], made[0], versions):
            return (*made, held)
    if of(current_app) is None:
        return None
    # Another process's tag, maybe: what the page depends on now, and the versions this process's
    # history covers, digested with the URL.
    note_depends()
    depends_on = depends.get(tag)
    for held in held_tags[:FOREIGN_TAGS]:
        version = version_of_tag(
            lambda version, held=held: etag_of(version, request.url) == held, versions, depends_on, FOREIGN_VERSIONS
        )
        if version is not None:
            depends.note(held, version, depends_on)
            return version, depends_on, held
    return None


def wrote(pxcode, before, after):
    """Declare that the current transaction writes ``pxcode``, its title ``before`` (None: it is
    created) and ``after`` (None: deleted). Before it commits, it reads the versions its writes
    left and the change log since what this process's watch knows; once it has committed, those
    are this process's versions at once, and its read cache forgets only the answers the changes
    touch (``depends``: the code's own, a filter's that selects it, a page whose rows they move;
    a page whose total alone they change is replayed with the new one), instead of everything
    until its watch has read them. Declare every row the transaction writes; a commit of anything
    undeclared forgets everything."""
    db.session.info.setdefault(WRITTEN, set()).add(Change(pxcode, before, after))


def of(app):
    """``app``'s read cache, or None (off, or SQLite)."""
    return app.extensions.get(EXTENSION)


def init_app(app):
    """Put the read cache in front of ``app``: the middleware, its version watch (with its own
    connection), its admission, and the commit hook that keeps this worker's own writes visible."""
    config = app.config
    url = config["SQLALCHEMY_DATABASE_URI"]
    if not config["READ_CACHE"] or make_url(url).get_backend_name() != "postgresql":
        return
    if not config["READ_CACHE_MAX_STALE"] > 0 or min(config["READ_CACHE_ENTRIES"], config["READ_CACHE_BYTES"]) < 1:
        raise ConfigError("READ_CACHE_MAX_STALE, READ_CACHE_ENTRIES and READ_CACHE_BYTES must be positive")
    # The app's own connect arguments: the watch's waits get the same deadlines (dbhealth).
    connect_args = config.get("SQLALCHEMY_ENGINE_OPTIONS", {}).get("connect_args") or engine_options(
        url, config["DB_CONNECT_TIMEOUT"], config["DB_STATEMENT_TIMEOUT"]
    )["connect_args"]
    watch = VersionWatch(url, connect_args, config["READ_CACHE_MAX_STALE"])
    metrics = observability.metrics(app)
    cache = ReadCache(
        app.wsgi_app, watch, config, "/api/", functools.partial(authenticate, app), metrics, app.json.dumps,
        limits.batches(app), functools.partial(turns.waiting, app),
    )
    app.wsgi_app = cache
    app.extensions[EXTENSION] = cache
    metrics.add_sampler(lambda: metrics.data_version_age.set(watch.confirmed_age() or 0))
    # Sessions are Flask-SQLAlchemy's, shared by every app of the process: the hook finds its app.
    if not event.contains(Session, "after_commit", _invalidate_after_commit):
        event.listen(Session, "before_commit", _read_own_versions)
        event.listen(Session, "after_commit", _invalidate_after_commit)
        event.listen(Session, "after_rollback", _forget_written)


def close(app):
    """Stop ``app``'s read cache (its listening thread and connection), if it has one."""
    cache = app.extensions.pop(EXTENSION, None)
    if cache is not None:
        cache.watch.stop()


def _read_own_versions(session):
    # The transaction's own writes hold the versions row's lock until it commits, so what it reads
    # after them is every change up to its own version: the watch need not be waited for.
    cache = of(current_app) if has_app_context() else None
    since = cache.watch.history_tag() if cache is not None and session.info.get(WRITTEN) else None
    if since is None:
        return
    session.flush()
    row = session.execute(DataVersion.select_current()).one()
    versioned = changelog.versioned_changes_between(session, since, Versions.of(*row).codes)
    session.info[OWN_VERSIONS] = (row, since, versioned)


def _invalidate_after_commit(session):
    # This process wrote: a client sees its own write at once. Its next reads know the versions
    # the write read before committing, or else ask the database (for what it wrote, or
    # everything) until the watch has re-read; the other processes hear of it by NOTIFY.
    written = session.info.pop(WRITTEN, None)
    own = session.info.pop(OWN_VERSIONS, None)
    if has_app_context():
        cache = of(current_app)
        if cache is None:
            return
        if written and own is not None:
            cache.watch.install_own(*own, frozenset(written))
        else:
            cache.watch.invalidate(frozenset(written) if written else None)


def _forget_written(session):
    session.info.pop(WRITTEN, None)
    session.info.pop(OWN_VERSIONS, None)
