"""The WSGI app the server runs: ``python serve.py`` (granian, target ``wsgi:app``)."""

from starter import create_app

app = create_app()
