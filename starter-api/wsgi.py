"""The WSGI app the server runs: ``python serve.py`` (granian, target ``wsgi:app``)."""

import secret_files
from starter import create_app
from starter.draining import Draining
from starter.observability.logs import log_startup

secret_files.load()
app = create_app()
app.wsgi_app = Draining(app.wsgi_app)  # outermost: every answer, replayed or not, closes while draining
log_startup(app)
