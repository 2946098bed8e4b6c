"""Management entry point: ``python manage.py createdb | adduser | loaddata | bootstrap | run``.

Flask-Script no longer imports on Flask >= 2; Flask's own click CLI offers the
same commands (``FlaskGroup`` is the documented replacement for a manage script).
"""

import os
import sys

import click
from flask.cli import FlaskGroup

import secret_files
from starter import create_app
from starter.config import ConfigError


def _create_app():
    # A command prints its result or one Error: line; the development server (`run`) logs as set.
    if sys.argv[1:2] != ["run"]:
        os.environ.setdefault("LOG_LEVEL", "ERROR")
    try:
        secret_files.load()
        return create_app()
    except (ConfigError, secret_files.SecretFileError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


cli = FlaskGroup(create_app=_create_app, help=__doc__.splitlines()[0])

if __name__ == "__main__":
    cli()
