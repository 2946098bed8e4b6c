"""gunicorn settings: the service's production server until granian replaced it (starter-api/serve.py).

Kept for `bench/run.sh --server gunicorn` (and bench/load_mixed.py --server gunicorn), to measure both
servers in one sitting; gunicorn itself is in bench/requirements.txt, not in the image. Read from the
environment:

PORT (5000), GUNICORN_BIND (0.0.0.0:$PORT), WEB_CONCURRENCY (3 worker processes),
GUNICORN_WORKER_CLASS (gthread), GUNICORN_THREADS (2 threads per worker),
GUNICORN_TIMEOUT (30 s), FORWARDED_ALLOW_IPS (127.0.0.1: the proxies trusted for X-Forwarded-*).
"""

import os

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '5000')}"
# Chosen by measurement on 2 cores (bench/run.sh --sizes 100 --server-env ...; bench/README.md):
# gthread 3x2 served ~1,000-1,200 req/s per endpoint, sync x4 about the same without keep-alive,
# gthread 2x4 ~800, 4x2 ~700-1,000. Threads overlap the database round trips.
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5

# Logs go to the container's stdout/stderr (docker logs); the app writes its own files under LOG_DIR.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Only a reverse proxy on these addresses may set X-Forwarded-For/-Proto (TLS terminates there).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Heartbeat files in memory, not on the container's overlay file system.
worker_tmp_dir = "/dev/shm"

# gunicorn's control socket (for `gunicornc`) defaults to $HOME/.gunicorn, and /app is not writable.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "/tmp/gunicorn/gunicorn.ctl")
