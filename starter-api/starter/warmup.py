"""A server worker warm before it takes traffic.

What a worker's first requests would otherwise pay for, none of which needs a client: the
database connections its request threads use, the statements of the hot paths compiled and run
once (a list page, the last page, a middle page in both orders, whose page anchors are built
here, an item, a word search, a code prefix), the version watch's first read (until then the
read cache replays nothing), the rate-limit script loaded into Redis; then what start-up made is
frozen out of the garbage collector's full collections (``gc.freeze``). What does need a client
stays on its first request: the password hash of its basic credentials (once per worker and
credentials; a token needs no hash, only its user's row, once).

``warm(app)`` runs in each worker before granian hands it a connection (``wsgi.py``), then
``wait_for_workers`` holds the worker back until every worker of the server is warm, so the
first ``/readyz`` any of them answers means all are: a worker that started serving alone would
take every connection a client opens at once, and keep them. Each step is bounded and a failure
is logged and skipped: a database that does not answer delays the start by at most
``WARMUP_TIMEOUT``, and ``/readyz`` says it is unreachable, as before.
"""

import gc
import os
import time

from sqlalchemy import text

from . import dbhealth, readcache
from .api.pxcodes import page_caches
from .db import db
from .http.pagination import PageArgs, render_page
from .limits import limiter
from .models import DataVersion, PxCode, User
from .queries import PxCodeListing
from .redislimits import OneTripFixedWindow

WORKERS_DIR_ENV = "SERVER_WARM_DIR"  # set by serve.py: where each warm worker leaves its pid
POLL = 0.02  # seconds between looks at the watch and at the other workers


def warm(app, deadline=None):
    """Warm ``app``'s process (PostgreSQL only; else nothing): ``{step: seconds}`` of the steps
    that ran, failed ones ``None``. ``deadline`` (time.monotonic()): default ``WARMUP_TIMEOUT``."""
    timeout = app.config["WARMUP_TIMEOUT"]
    if timeout <= 0:
        return {}
    deadline = deadline or time.monotonic() + timeout
    steps = {}
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            return {}
        for name, step in (("probe", _probe), ("connections", _connect), ("version watch", _first_read),
                           ("rate limits", _load_limit_script), ("requests", _hot_paths)):
            if time.monotonic() >= deadline:
                steps[name] = None
                continue
            started = time.monotonic()
            try:
                step(app, deadline)
                steps[name] = time.monotonic() - started
            except Exception as exc:  # a cold start, not a failed one
                steps[name] = None
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                app.logger.warning("warm-up: %s skipped (%s)", name, reason)
            finally:
                db.session.remove()
    # What start-up made lives as long as the process: out of the collector's way, so a full
    # collection early in the traffic does not stop the worker's threads to walk all of it.
    gc.collect()
    gc.freeze()
    app.logger.info("warm-up: %s", ", ".join(
        f"{name} {'failed' if s is None else f'{s * 1000:.0f} ms'}" for name, s in steps.items()))
    return steps


def _probe(app, deadline):
    """The database health probe's first look: it keeps that connection for a second opinion."""
    health = dbhealth.of(app)
    if health is not None and not health.check_now():
        raise ConnectionError("the database does not answer")


def _connect(app, deadline):
    """As many pooled connections as the worker's request threads use at once, opened and kept."""
    connections = []
    try:
        for _ in range(app.config["SERVER_THREADS"]):
            connection = db.engine.connect()
            connections.append(connection)
            connection.execute(text("SELECT 1"))
    finally:
        for connection in connections:
            connection.close()  # back to the pool, open


def _first_read(app, deadline):
    cache = readcache.of(app)
    if cache is None:
        return
    while cache.watch.known() is None:  # the first call starts the watch
        if time.monotonic() >= deadline:
            raise TimeoutError("no version read before the deadline")
        time.sleep(POLL)


def _load_limit_script(app, deadline):
    strategy = limiter.limiter if limiter.enabled else None
    if isinstance(strategy, OneTripFixedWindow):
        strategy.count([])  # no bucket: loads the script (EVALSHA from then on) and a connection


def _hot_paths(app, deadline):
    """The pages, item and searches a client asks for first, made as their views make them
    (without HTTP, credentials or the read cache): statements compiled, page anchors built."""
    pager, _ = page_caches(app)
    User.by_username("")  # basic auth's lookup, compiled
    db.session.get(User, 0)  # a token's

    def page(query):
        with app.test_request_context("/api/v1.0/pxcodes/?" + query):
            listing, args = PxCodeListing.from_request(), PageArgs.from_request()
            _, found = pager.search(listing, args, DataVersion.current().codes)
            render_page(found, PxCode.serializer())
            return found

    first = page("")
    if not first.items:
        return
    code = first.items[0]
    with app.test_request_context(f"/api/v1.0/pxcodes/{code.pxcode}"):
        PxCode.get_or_404(code.pxcode).to_dict()
    page(f"page={first.last}")
    for sort in ("pxcode", "procedure"):  # builds each order's anchors (pagekeys) if the table has any
        if time.monotonic() < deadline:
            page(f"sort={sort}&page={max(first.last // 2, 1)}")
    word = next((w for w in code.procedure.split() if w.isalnum()), None)
    if word and time.monotonic() < deadline:
        page("q=" + word)
    page("code=" + code.pxcode[0])


def wait_for_workers(app, deadline=None, directory=None):
    """Leave this worker's pid in ``directory`` (``$SERVER_WARM_DIR``; none: return at once),
    then wait until ``WORKER_PROCESSES`` live workers have, or the deadline. True if they have."""
    directory = directory or os.environ.get(WORKERS_DIR_ENV)
    if not directory:
        return True
    deadline = deadline or time.monotonic() + max(app.config["WARMUP_TIMEOUT"], 0)
    open(os.path.join(directory, str(os.getpid())), "w").close()
    while True:
        if _warm_workers(directory) >= app.config["WORKER_PROCESSES"]:
            return True
        if time.monotonic() >= deadline:
            app.logger.warning("warm-up: not every worker warm in time; serving anyway")
            return False
        time.sleep(POLL)


def _warm_workers(directory):
    """How many processes still alive left their pid (a worker started again replaces a dead one)."""
    alive = 0
    for name in os.listdir(directory):
        if name.isdigit():
            try:
                os.kill(int(name), 0)
                alive += 1
            except OSError:  # gone (or a pid reused by someone else's process)
                pass
    return alive
