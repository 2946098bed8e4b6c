"""Prometheus metrics (prometheus-client): what each worker counts, and the master's exporter.

Every worker process of ``serve.py`` writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multi-process mode); the server's master process serves their sum on
``METRICS_PORT``, so a scrape sees the whole server whichever worker would have answered. The
metrics port is not the API's, and it asks for no credentials: publish it to the scraper only.

Without ``PROMETHEUS_MULTIPROC_DIR`` (tests, ``manage.py run``) the same objects count in memory.
"""

import glob
import logging
import os
import re
import threading
import time
import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A service whose cached answers take a millisecond or two: fine steps there, coarse ones up to the
# timeouts (DB_STATEMENT_TIMEOUT is 5 s).
DURATION_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
UNMATCHED_ROUTE = "unmatched"
SAMPLE_SECONDS = 1.0  # how often the gauges are read (well under a scrape interval)

log = logging.getLogger(__name__)  # requests for no route (404s): one series, whatever the path


class Metrics:
    """The service's metrics; one instance per app (``app.extensions``), values per process."""

    def __init__(self, registry=None):
        # Multi-process mode: values live in files, and the exporter reads the files, not a
        # registry. Otherwise each app keeps its own registry (two apps in a test never mix).
        if registry is None and not multiprocess_dir():
            registry = CollectorRegistry()
        self.registry = registry
        r = {"registry": registry}
        self.requests = Counter(
            "starter_http_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], **r,
        )
        self.duration = Histogram(
            "starter_http_request_duration_seconds",
            "Time from the request reaching the app to its answer being handed back to the server.",
            ["route", "method"], buckets=DURATION_BUCKETS, **r,
        )
        self.read_cache = Counter(
            "starter_read_cache_answers",
            "Reads the read cache could answer: replayed from memory, or sent to Flask.",
            ["answered_by"], **r,
        )
        self.rate_limited = Counter(
            "starter_rate_limit_refusals", "Requests refused with 429, by the limit reached.", ["limit"], **r,
        )
        self.failed_logins = Counter(
            "starter_failed_logins", "Requests whose credentials were rejected (401).", **r,
        )
        self.password_hashes = Counter(
            "starter_password_hashes", "Password hashes computed (each takes tens of milliseconds).", **r,
        )
        self.database_errors = Counter(
            "starter_database_errors", "Requests answered 503 because the database failed them.", **r,
        )
        self.database_unreachable = Gauge(
            "starter_database_unreachable_seconds",
            "How long this server's workers have found the database unreachable (0 while it answers).",
            multiprocess_mode="livemax", **r,
        )
        self.pool_connections = Gauge(
            "starter_database_pool_connections",
            "Database connections of the workers' pools, by state.",
            ["state"], multiprocess_mode="livesum", **r,
        )
        self.data_version_age = Gauge(
            "starter_data_version_age_seconds",
            "Seconds since a worker last confirmed the data version the read cache uses.",
            multiprocess_mode="livemax", **r,
        )
        self.imported_rows = Counter(
            "starter_imported_rows", "Rows written by import-pxcodes, by outcome.", ["outcome"], **r,
        )
        self._request_children = {}
        self._samplers = []
        self._sampling_pid = None
        self._lock = threading.Lock()

    def add_sampler(self, sample):
        """Call ``sample()`` every ``SAMPLE_SECONDS`` in each worker: it sets the gauges it owns."""
        self._samplers.append(sample)

    def ensure_sampling(self):
        """Start this process's sampling thread if it has none (a forked worker inherits none)."""
        if self._sampling_pid == os.getpid() or not self._samplers:
            return
        with self._lock:
            if self._sampling_pid == os.getpid():
                return
            self._sampling_pid = os.getpid()
            # By weak reference: the thread ends with its app (tests make many in one process).
            threading.Thread(target=_sample_forever, args=(weakref.ref(self),), name="metrics-sampler",
                             daemon=True).start()

    def sample(self):
        for sample in self._samplers:
            try:
                sample()
            except Exception:  # a gauge left as it was must not end the others
                log.exception("a metrics sampler failed")

    def count_request(self, route, method, status, seconds):
        """Count one answer; the label children are kept, so a request costs two increments."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, status),
                self.duration.labels(route, method),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def multiprocess_dir():
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


_PID_IN_NAME = re.compile(r"_(\d+)\.db$")


def forget_dead_workers(directory):
    """Drop the live gauges of worker processes that are gone (granian restarts dead workers).

    Their counters stay: a counter must never go down, whoever counted.
    """
    from prometheus_client import multiprocess

    pids = {int(m.group(1)) for f in glob.glob(os.path.join(directory, "gauge_live*_*.db"))
            if (m := _PID_IN_NAME.search(f))}
    for pid in pids:
        if not os.path.exists(f"/proc/{pid}"):
            multiprocess.mark_process_dead(pid, directory)


def serve_metrics(port, host, directory):
    """Serve the sum of every worker's metrics from ``directory`` on ``host:port`` (a thread)."""
    from prometheus_client import start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    class _LiveWorkers(MultiProcessCollector):
        def collect(self):
            forget_dead_workers(directory)
            return super().collect()

    registry = CollectorRegistry()
    _LiveWorkers(registry, path=directory)
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server


def _sample_forever(metrics_ref):
    """Sample every SAMPLE_SECONDS while the app's ``Metrics`` lives."""
    while True:
        metrics = metrics_ref()
        if metrics is None:
            return
        metrics.sample()
        del metrics
        time.sleep(SAMPLE_SECONDS)
