"""WSGI entry point for gunicorn: ``gunicorn wsgi:app``."""

from starter import create_app

app = create_app()
