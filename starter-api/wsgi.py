"""The WSGI app the server runs: ``python serve.py`` (granian, target ``wsgi:app``).

Each worker imports this before it takes a connection: the app is warmed here, and the worker
waits for the others to be warm too (``starter.warmup``), so a server that answers is warm.
"""

import time

import secret_files
from starter import create_app, warmup
from starter.draining import Draining
from starter.observability.logs import log_startup

secret_files.load()
app = create_app()
app.wsgi_app = Draining(app.wsgi_app)  # outermost: every answer, replayed or not, closes while draining
_deadline = time.monotonic() + max(app.config["WARMUP_TIMEOUT"], 0)
warmup.warm(app, _deadline)
warmup.wait_for_workers(app, _deadline)
log_startup(app)
