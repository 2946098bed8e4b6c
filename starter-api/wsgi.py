"""The WSGI app the server runs: ``python serve.py`` (granian, target ``wsgi:app``)."""

from starter import create_app
from starter.observability.logs import log_startup

app = create_app()
log_startup(app)
