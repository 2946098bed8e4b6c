"""``python manage.py import-pxcodes FILE [--replace]``: bulk import from TSV or CSV.

The file is read and checked whole before anything is written; any bad row is a
one-line ``Error: ...`` naming the first bad lines, exit status 1, nothing written.
See ``starter.importer`` for the file format.
"""

import functools
import sys
import time

import click
from flask.cli import with_appcontext
from sqlalchemy.exc import DBAPIError

from .db import db
from .importer import ImportFileError, load_rows, parse_file


def _is_terminal():
    return sys.stdout.isatty()


def _import_errors_as_one_line(command):
    @functools.wraps(command)
    @with_appcontext
    def wrapped(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ImportFileError as exc:
            raise click.ClickException(str(exc)) from None
        except DBAPIError as exc:  # e.g. the database is unreachable
            db.session.rollback()
            detail = str(exc.orig or exc).strip().splitlines()
            raise click.ClickException(
                f"database unavailable: {detail[0] if detail else type(exc).__name__}"
            ) from None

    return wrapped


@click.command("import-pxcodes")
@click.argument("path", metavar="FILE")
@click.option(
    "--replace",
    is_flag=True,
    help="Make the table exactly the file's codes (deletes the others), in one transaction.",
)
@_import_errors_as_one_line
def import_pxcodes_command(path, replace):
    """Import codes from a TSV or CSV file (code, procedure; header row optional).

    New codes are inserted, changed titles updated, identical rows left alone.
    Any bad row rejects the whole file (nothing is written).
    """
    started = time.perf_counter()
    parsed = parse_file(path)
    rows = parsed.rows
    if _is_terminal():
        with click.progressbar(length=len(rows), label=f"Importing {path}") as bar:
            result = load_rows(rows, replace=replace, progress=bar.update)
    else:
        result = load_rows(rows, replace=replace)
    elapsed = time.perf_counter() - started
    notes = []
    if parsed.header is not None:
        notes.append("header row skipped: " + " | ".join(cell.strip() for cell in parsed.header))
    click.echo(
        f"Imported {path}: {result.summary()}"
        f" ({len(rows)} rows in {elapsed:.2f} s, {len(rows) / max(elapsed, 1e-9):,.0f} rows/s)"
        + (f"; {'; '.join(notes)}" if notes else "")
    )


def init_app(app):
    """Register ``import-pxcodes`` on ``app.cli``."""
    app.cli.add_command(import_pxcodes_command)
