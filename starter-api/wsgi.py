"""The WSGI app the server runs: ``python serve.py`` (granian, target ``wsgi:app``)."""

from starter import create_app
from starter.http.environ import without_process_environment

app = create_app()
app.wsgi_app = without_process_environment(app.wsgi_app)
