"""What operators see: Prometheus metrics, one access line per request, request ids in every log line.

``logs.init_app`` runs first in the factory (everything after it may log), ``init_app`` early
(the metrics, for the other parts to count in), ``wrap`` last, around the read cache and Flask. The metrics of every worker are served by ``serve.py``'s master on
``METRICS_PORT`` (``metrics.serve_metrics``).
"""

from flask import request

from .. import dbhealth
from ..db import db
from . import logs
from .metrics import UNMATCHED_ROUTE, Metrics
from .middleware import REPLAYED, ROUTE, USER, RequestObserver

EXTENSION = "starter_metrics"

__all__ = ["REPLAYED", "USER", "init_app", "logs", "metrics", "wrap"]


def metrics(app):
    """Return ``app``'s ``Metrics``."""
    return app.extensions[EXTENSION]


def init_app(app):
    """Give ``app`` its metrics, and note each request's route for them."""
    app.extensions[EXTENSION] = Metrics()

    @app.before_request
    def _note_route():
        # Before every other hook, so a request refused by auth or a limit has its route too.
        rule = request.url_rule
        request.environ[ROUTE] = rule.rule if rule is not None else UNMATCHED_ROUTE


def wrap(app):
    """Count and log every request of ``app``, replays included (after the read cache is in place)."""
    app.wsgi_app = RequestObserver(app.wsgi_app, metrics(app), app.config["ACCESS_LOG"])
    _sample_the_database(app)


def _sample_the_database(app):
    """Each second: the worker's connection pool, and how long the database has been unreachable."""
    gauges = metrics(app)
    health = dbhealth.of(app)
    engine = []

    def sample():
        if not engine:
            with app.app_context():
                engine.append(db.engine)
        pool = engine[0].pool
        if hasattr(pool, "checkedout"):  # QueuePool (SQLite file databases use one too)
            gauges.pool_connections.labels("checked_out").set(pool.checkedout())
            gauges.pool_connections.labels("idle").set(pool.checkedin())
        if health is not None:
            gauges.database_unreachable.set(health.down_for())

    gauges.add_sampler(sample)
