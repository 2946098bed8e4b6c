"""The WSGI app the server runs: ``python serve.py`` (granian, target ``wsgi:app``)."""

import secret_files
from starter import create_app
from starter.observability.logs import log_startup

secret_files.load()
app = create_app()
log_startup(app)
