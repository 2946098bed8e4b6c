"""Management commands (``python manage.py ...`` or ``flask --app starter ...``):
createdb, adduser, loaddata, import-pxcodes, bootstrap.

Every failure is a one-line ``Error: ...`` and exit status 1, never a traceback.
"""

import functools
import sys
import time

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from . import db as database
from . import observability
from .db import db
from .importer import ImportFileError, load_rows, parse_file
from .models import PxCode, User, ValidationError
from .textfile import TextFileError, read_utf8


def _database_command(command):
    """Run ``command`` in an app context; an unreachable database is a one-line error."""

    @functools.wraps(command)
    @with_appcontext
    def wrapped(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DBAPIError as exc:
            database.discard_session()
            lines = str(exc.orig or exc).strip().splitlines()
            what = "database unavailable" if isinstance(exc, OperationalError) else "database error"
            raise click.ClickException(
                f"{what}: {lines[0] if lines else type(exc).__name__}"
            ) from None

    return wrapped


def _count_pxcodes():
    return db.session.scalar(select(func.count()).select_from(PxCode))


def _database_shown():
    return database.masked_url(current_app.config["SQLALCHEMY_DATABASE_URI"])


def create_user(username, password, is_admin=False):
    """Add a user, or raise ``click.ClickException`` saying why not."""
    try:
        User.validate_username(username)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    if not password:
        raise click.ClickException("password must not be empty")
    if User.by_username(username) is not None:
        raise click.ClickException(f"user {username!r} already exists")
    user = User(username=username, is_admin=is_admin)
    user.password = password
    db.session.add(user)
    db.session.commit()
    return user


def load_sql_file(path):
    """Run a SQL file in one transaction; return how many codes it added."""
    try:
        sql = read_utf8(path)
    except TextFileError as exc:
        raise click.ClickException(f"{exc} (nothing was loaded)") from None
    before = _count_pxcodes()
    db.session.commit()  # end the read transaction before the script's own
    try:
        database.run_sql_script(sql)
    except database.SQLScriptError as exc:
        raise click.ClickException(f"{path}: {exc} (nothing was loaded)") from None
    return _count_pxcodes() - before


@click.command("createdb")
@_database_command
def createdb_command():
    """Drop and recreate the tables (all data is lost)."""
    database.recreate_tables()
    click.echo(f"Created empty tables starter_pxcodes, starter_users in {_database_shown()}")


@click.command("adduser")
@click.argument("username")
@click.argument("password", required=False)
@click.option("--admin", is_flag=True, help="May create, change and delete codes.")
@_database_command
def adduser_command(username, password, admin):
    """Add a user; the password is prompted for (twice) when omitted."""
    if password is None:
        password = click.prompt("Password", hide_input=True)
        if click.prompt("Repeat for confirmation", hide_input=True) != password:
            raise click.ClickException("the two passwords do not match")
    create_user(username, password, is_admin=admin)
    click.echo(f"{'Admin' if admin else 'User'} {username!r} added")


@click.command("loaddata")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@_database_command
def loaddata_command(path):
    """Load a SQL file (default: data/starter_pxcodes.sql) into the configured database."""
    path = path or str(database.STARTER_SQL)
    added = load_sql_file(path)
    click.echo(f"Loaded {path}: {added} codes added, {_count_pxcodes()} in starter_pxcodes")


@click.command("bootstrap")
@_database_command
def bootstrap_command():
    """Prepare the database for serving; safe to run on every start.

    Waits for the database, creates missing tables (keeping data), loads the
    starter codes into an empty table, and adds the user named by
    STARTER_ADMIN_USERNAME / STARTER_ADMIN_PASSWORD when both are set.
    """
    config = current_app.config
    timeout = config["DB_WAIT_TIMEOUT"]
    click.echo(f"Waiting up to {timeout}s for {_database_shown()}")
    database.wait_for_database(timeout)
    database.upgrade_schema()
    if _count_pxcodes() == 0:
        added = load_sql_file(database.STARTER_SQL)
        click.echo(f"Loaded {added} starter codes")
    username = config["STARTER_ADMIN_USERNAME"]
    password = config["STARTER_ADMIN_PASSWORD"]
    if username and password and User.by_username(username) is None:
        create_user(username, password, is_admin=True)
        click.echo(f"Admin {username!r} added")
    click.echo(f"Database ready: {_count_pxcodes()} codes")


def _is_terminal():
    return sys.stdout.isatty()


@click.command("import-pxcodes")
@click.argument("path", metavar="FILE")
@click.option(
    "--replace",
    is_flag=True,
    help="Make the table exactly the file's codes (deletes the others), in one transaction.",
)
@_database_command
def import_pxcodes_command(path, replace):
    """Import codes from a TSV or CSV file (code, procedure; header row optional).

    New codes are inserted, changed titles updated, identical rows left alone.
    Any bad row rejects the whole file (nothing is written).
    """
    started = time.perf_counter()
    try:
        parsed = parse_file(path)
        rows = parsed.rows
        if _is_terminal():
            with click.progressbar(length=len(rows), label=f"Importing {path}") as bar:
                result = load_rows(rows, replace=replace, progress=bar.update)
        else:
            result = load_rows(rows, replace=replace)
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from None
    elapsed = time.perf_counter() - started
    imported = observability.metrics(current_app).imported_rows
    for outcome in ("inserted", "updated", "unchanged", "deleted"):
        imported.labels(outcome).inc(getattr(result, outcome))
    notes = []
    if parsed.header is not None:
        notes.append("header row skipped: " + " | ".join(cell.strip() for cell in parsed.header))
    click.echo(
        f"Imported {path}: {result.summary()}"
        f" ({len(rows)} rows in {elapsed:.2f} s, {len(rows) / max(elapsed, 1e-9):,.0f} rows/s)"
        + (f"; {'; '.join(notes)}" if notes else "")
    )


def init_app(app):
    """Register the management commands on ``app.cli``."""
    commands = (
        createdb_command,
        adduser_command,
        loaddata_command,
        import_pxcodes_command,
        bootstrap_command,
    )
    for command in commands:
        app.cli.add_command(command)
