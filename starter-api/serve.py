"""The production server: granian (WSGI, HTTP/1.1) in front of ``wsgi:app``, set from the environment.

    python serve.py              # what the Docker image runs, after `python manage.py bootstrap`
    python serve.py --print      # print the settings it would use, and exit
    python serve.py MODULE:APP   # another WSGI callable with the same settings (the bench's ceiling)

Every setting lives here and only here (the Docker image, bench/ and tests/test_faults.py all start
the service through this file):

  PORT (5000), SERVER_HOST (0.0.0.0)   where it listens
  WEB_CONCURRENCY (2)                  worker processes
  SERVER_THREADS (2)                   requests a worker runs at once (read by the app: starter/http/turns.py);
                                       granian's other threads wait for a turn. A second one keeps a worker
                                       answering while a request waits on the database; more only add GIL
                                       contention (bench/README.md, "Turns")
  REQUEST_BODY_SLOTS (128)             read by the app (starter/http/bodies.py): request bodies a worker reads
                                       at once. granian gets this many blocking threads beyond SERVER_THREADS,
                                       since a request waiting for its body (up to REQUEST_BODY_TIMEOUT) holds one
  SERVER_BACKPRESSURE (1024/workers)   connections a worker serves at once; more wait unanswered. granian
                                       counts open keep-alive connections, not requests in flight: keep it
                                       above the connections a proxy or the clients hold open
  SERVER_ACCESS_LOG (off)              one line per request on stdout (on/off); a large share of the
                                       cost of a cached read (bench/README.md)
  SERVER_LOG_LEVEL (info)              granian's own log (the app's log: LOG_LEVEL)
  SERVER_HEADER_TIMEOUT (10)           seconds a client has to send a request's headers (also the idle
                                       keep-alive limit between two requests)
  SERVER_DRAIN_TIMEOUT (10)            on SIGTERM (docker stop), first refuse new connections and close the
                                       open ones after their next answer, for up to this many seconds, so
                                       that a proxy is never caught sending on a connection being closed
                                       (starter/draining.py); 0: no drain. A second SIGTERM stops at once
  SERVER_GRACEFUL_TIMEOUT (20)         then (or at once on SIGINT): stop accepting, let requests in flight
                                       finish for up to this many seconds, then kill the workers
  METRICS_PORT (unset)                 serve Prometheus metrics, summed over every worker, on this port
                                       (same host as the API); unset: no metrics endpoint
  METRICS_DIR (a new temporary folder) where the workers keep their metric values (emptied at start)
  WARMUP_TIMEOUT (30)                  read by the app: seconds a worker may spend warming (connections,
                                       the hot statements, page anchors, the version watch's first read)
                                       and waiting for the other workers, before it takes connections
  FORWARDED_PROXIES (0)                read by the app, not here: how many proxies in front may set
                                       X-Forwarded-For/-Proto (werkzeug ProxyFix). granian itself trusts
                                       no forwarded header.

A worker that dies is started again. granian has no per-request timeout: a request's time is bounded
by the app's DB_CONNECT_TIMEOUT and DB_STATEMENT_TIMEOUT. WEB_CONCURRENCY, SERVER_THREADS,
SERVER_BACKPRESSURE and SERVER_ACCESS_LOG were chosen by measurement on 2 cores: bench/README.md,
"The server".
"""

import copy
import logging
import os
import re
import shutil
import sys
import threading
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent


def _name_the_metrics_folder():
    """With METRICS_PORT, the folder where every worker keeps its metric values (METRICS_DIR, else a
    new temporary one), in PROMETHEUS_MULTIPROC_DIR. prometheus-client chooses how it keeps values
    when first imported, which the app's modules imported below do, here and in every worker
    granian forks from this process: the folder must be named before."""
    import tempfile

    if os.environ.get("METRICS_PORT", "").strip() and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = os.environ.get("METRICS_DIR", "").strip() or tempfile.mkdtemp(prefix="starter-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def _name_the_warm_folder():
    """A new folder where each worker leaves its pid once warm (starter/warmup.py): a worker
    waits there for the others before it takes traffic, so the first answer means all are warm."""
    import tempfile

    os.environ[WARM_DIR_ENV] = tempfile.mkdtemp(prefix="starter-warm-")


_name_the_metrics_folder()

import secret_files  # noqa: E402  (beside this file: on sys.path wherever it is started from)
from starter import config, draining  # noqa: E402
from starter.config import REQUEST_BODY_SLOTS, env_bool, env_int  # noqa: E402
from starter.warmup import WORKERS_DIR_ENV as WARM_DIR_ENV  # noqa: E402
DEFAULT_APP = "wsgi:app"
# The largest request head (request line and headers) granian reads: a larger one is answered 431
# (granian's default, ~400 KiB, let a 20 KB Authorization header through to the app).
MAX_HEAD_BYTES = 16384
BACKLOG = 1024  # the listen queue (granian's default)
ACCESS_LOG_FORMAT = '%(addr)s - "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms qs="%(query_string)s"'


class AccessFormatter(logging.Formatter):
    """granian's access line with control characters escaped: the path is percent-decoded, so a
    client's %0A would otherwise start a forged line in the log."""

    _control = re.compile(r"[\x00-\x1f\x7f]")

    def format(self, record):
        return self._control.sub(lambda m: f"\\x{ord(m.group()):02x}", super().format(record))


class _WakingEvent(threading.Event):
    """The master's main-loop event, its untimed wait woken twice a second.

    granian's master waits on a threading.Event for SIGTERM/SIGINT to set it. When the kernel delivers
    the signal to one of the master's other threads (each watches a worker), CPython only runs the
    Python handler once the main thread runs again, and an untimed wait never returns: docker stop's
    SIGTERM was then lost (seen here, and reproduced with tgkill to a watcher thread).
    """

    def wait(self, timeout=None):
        if timeout is not None:
            return super().wait(timeout)
        while not super().wait(0.5):
            pass
        return True


def log_config():
    """granian's logging setup, with AccessFormatter (workers import it as ``serve``)."""
    from granian.log import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["access"]["()"] = "serve.AccessFormatter"
    # The drain's lines (the master's) beside granian's own.
    config["loggers"][draining.log.name] = {"handlers": ["console"], "level": "INFO", "propagate": False}
    return config


def _int(name, default, minimum=1):
    return env_int(os.environ, name, default, minimum)


def settings():
    """The server's settings, from the environment (see the module docstring)."""
    return {
        "host": os.environ.get("SERVER_HOST", "").strip() or "0.0.0.0",
        "port": _int("PORT", 5000),
        "workers": _int("WEB_CONCURRENCY", 2),
        "threads": _int("SERVER_THREADS", 2),
        "body_slots": _int("REQUEST_BODY_SLOTS", REQUEST_BODY_SLOTS),
        "backpressure": _int("SERVER_BACKPRESSURE", BACKLOG // _int("WEB_CONCURRENCY", 2)),
        "access_log": env_bool(os.environ, "SERVER_ACCESS_LOG", False),
        "log_level": os.environ.get("SERVER_LOG_LEVEL", "").strip().lower() or "info",
        "header_timeout": _int("SERVER_HEADER_TIMEOUT", 10),
        "drain_timeout": _int("SERVER_DRAIN_TIMEOUT", 10, minimum=0),
        "graceful_timeout": _int("SERVER_GRACEFUL_TIMEOUT", 20),
        "metrics_port": _int("METRICS_PORT", 0, minimum=0),
    }


def build(target=DEFAULT_APP, conf=None):
    """A granian server for ``target`` (``module:callable``, imported in each worker from APP_DIR)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    conf = conf or settings()
    return Granian(
        target,
        address=conf["host"],
        port=conf["port"],
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=conf["workers"],
        # granian starts a thread only when requests queue: the extra ones exist while bodies are awaited.
        blocking_threads=conf["threads"] + conf["body_slots"],
        backlog=BACKLOG,
        backpressure=conf["backpressure"],
        http1_settings=HTTP1Settings(
            header_read_timeout=conf["header_timeout"] * 1000, keep_alive=True, max_buffer_size=MAX_HEAD_BYTES
        ),
        log_level=LogLevels(conf["log_level"]),
        log_access=conf["access_log"],
        log_access_format=ACCESS_LOG_FORMAT,
        log_dictconfig=log_config(),
        respawn_failed_workers=True,
        workers_kill_timeout=conf["graceful_timeout"],
        working_dir=APP_DIR,
    )


def _serve_metrics(conf):
    """Export the workers' metrics from this (the master) process: every worker writes its values to
    files in PROMETHEUS_MULTIPROC_DIR (prometheus-client's multi-process mode), inherited from here."""
    from starter.observability.metrics import serve_metrics

    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):  # values of an earlier run would be counted again
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))

    try:
        serve_metrics(conf["metrics_port"], conf["host"], directory)
    except OSError as exc:
        raise SystemExit(f"serve.py: cannot serve metrics on port {conf['metrics_port']}: {exc.strerror}") from None


def main(argv):
    args = [a for a in argv if a != "--print"]
    if len(args) > 1 or (args and ":" not in args[0]):
        raise SystemExit("usage: python serve.py [--print] [MODULE:APP]")
    target = args[0] if args else DEFAULT_APP
    try:
        conf = settings()
        if target == DEFAULT_APP:
            # What would stop every worker at start (a missing SECRET_KEY, a bad setting) stops here
            # in one line, before granian starts workers that die and are started again. On a copy
            # of the environment: the workers read the secret files themselves (wsgi.py).
            environ = dict(os.environ)
            secret_files.load(environ)
            config.check_production(config.load(environ=environ))
    except (config.ConfigError, secret_files.SecretFileError) as exc:
        raise SystemExit(f"Error: {exc}") from None
    if "--print" in argv:
        print(" ".join(f"{k}={v}" for k, v in {"app": target, **conf}.items()))
        return
    os.chdir(APP_DIR)  # as the image's WORKDIR: the app finds instance/ and data/ from here
    _name_the_warm_folder()
    if conf["metrics_port"]:
        _serve_metrics(conf)
    server = build(target, conf)
    server.main_loop_interrupt = _WakingEvent()
    draining.drain_on_sigterm(server, conf["port"], conf["drain_timeout"])
    try:
        server.serve()
    finally:
        shutil.rmtree(os.environ[WARM_DIR_ENV], ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
