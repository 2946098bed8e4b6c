"""The database: one place for engine settings, schema set-up and SQL loading."""

import re
import time
from pathlib import Path

import flask_migrate
from flask import current_app
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, Table, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from . import dbhealth

PROJECT_DIR = Path(__file__).resolve().parent.parent
STARTER_SQL = PROJECT_DIR / "data" / "starter_pxcodes.sql"
MIGRATIONS_DIR = PROJECT_DIR / "migrations"


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate(directory=str(MIGRATIONS_DIR), render_as_batch=True)
# The revision that matches a schema made before migrations existed (create_all).
BASELINE_REVISION = "0001"


def engine_options(url, connect_timeout, statement_timeout_ms, connection_factory=None):
    """Return engine options for ``url``: bounded connects and statements, stale links dropped.

    ``connection_factory`` (PostgreSQL): the class that gives connections their
    client-side deadlines (``dbhealth``).
    """
    options = {"pool_pre_ping": True}
    if make_url(url).get_backend_name() == "postgresql":
        options["connect_args"] = {
            "connect_timeout": connect_timeout,
            "options": f"-c statement_timeout={int(statement_timeout_ms)}",
        }
        if connection_factory is not None:
            options["connect_args"]["connection_factory"] = connection_factory
    return options


def masked_url(url):
    """Return ``url`` fit for a log line: the password replaced by ``***``."""
    return make_url(url).render_as_string(hide_password=True)


# What the migrations make with no model to compare: tables only triggers write (0004's title
# words, 0005's change log), an expression index, the log's index.
UNMAPPED = frozenset({
    "starter_pxcode_words", "ix_starter_pxcodes_title_words",
    "starter_pxcode_changes", "ix_starter_pxcode_changes_version",
})


def for_dialect(dialect_name):
    """Return an alembic ``include_object`` hook that skips schema items made for other databases.

    Items declared with ``.ddl_if(dialect=...)`` (PostgreSQL-only indexes) are
    not created elsewhere, so autogenerate must not ask for them there; nor may
    it drop ``UNMAPPED``.
    """

    def include_object(obj, name, type_, reflected, compare_to):
        if name in UNMAPPED:
            return False
        ddl_if = getattr(obj, "_ddl_if", None)
        return ddl_if is None or ddl_if.dialect in (None, dialect_name)

    return include_object


def init_app(app):
    """Bind the database extension to ``app`` with its engine options.

    On PostgreSQL every connection waits with client-side deadlines and the
    process keeps track of whether the database answers (``dbhealth``).
    """
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    options = engine_options(url, app.config["DB_CONNECT_TIMEOUT"], app.config["DB_STATEMENT_TIMEOUT"])
    if "connect_args" in options:
        health = dbhealth.init_app(app, options["connect_args"])
        options["connect_args"]["connection_factory"] = health.connection_class
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", options)
    db.init_app(app)
    migrate.init_app(app, db)
    # Registered after Flask-SQLAlchemy's teardown, so it runs before it.
    app.teardown_appcontext(lambda exc: discard_session())


def discard_session():
    """Roll back the session; if its connection is dead, drop the connection instead of raising.

    A database that goes away after a view finished must not turn its answer
    (perhaps a committed write) into a 500 at teardown.
    """
    try:
        db.session.rollback()
    except SQLAlchemyError:
        db.session().invalidate()  # the scoped_session proxy does not forward invalidate()


def database_answers():
    """Return True if the database answers ``SELECT 1`` now, on a fresh connection.

    On PostgreSQL: False at once while the database is known to be down, else the
    health probe's verdict (``DB_PROBE_TIMEOUT``). Elsewhere: within the connect timeout.
    """
    app = current_app
    health = dbhealth.of(app)
    if health is not None:
        return health.check_now()
    probe = app.extensions.get("starter_probe_engine")
    if probe is None:
        options = engine_options(
            app.config["SQLALCHEMY_DATABASE_URI"],
            app.config["DB_CONNECT_TIMEOUT"],
            app.config["DB_STATEMENT_TIMEOUT"],
        )
        options.pop("pool_pre_ping")
        probe = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool, **options)
        app.extensions["starter_probe_engine"] = probe
    try:
        with probe.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        app.logger.warning("readiness check failed: %s", type(exc).__name__)
        return False
    return True


def upgrade_schema():
    """Create missing tables and apply pending migrations; existing data is kept."""
    tables = set(inspect(db.engine).get_table_names())
    if "starter_pxcodes" in tables and "alembic_version" not in tables:
        flask_migrate.stamp(revision=BASELINE_REVISION)
    flask_migrate.upgrade()


def drop_tables():
    """Drop the service's tables and its migration record (other tables are left alone)."""
    db.drop_all()
    Table("alembic_version", MetaData()).drop(db.engine, checkfirst=True)


def recreate_tables():
    """Drop the service's tables and create them again, empty (the seed's ``createdb``)."""
    drop_tables()
    upgrade_schema()


def wait_for_database(timeout, interval=1.0, sleep=time.sleep):
    """Block until the database answers, or raise ``OperationalError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except OperationalError:
            if time.monotonic() >= deadline:
                raise
            sleep(interval)


class SQLScriptError(Exception):
    """A SQL file failed to load; nothing of it was kept."""


# Where a statement can end: outside quotes, comments and dollar-quoted bodies.
_SQL_TOKEN = re.compile(
    r"'(?:[^']|'')*'?"  # string literal ('' escapes a quote)
    r'|"(?:[^"]|"")*"?'  # quoted identifier
    r"|--[^\n]*"  # line comment
    r"|/\*.*?(?:\*/|\Z)"  # block comment
    r"|\$(?P<tag>[A-Za-z_]*)\$.*?(?:\$(?P=tag)\$|\Z)"  # dollar quoting (PostgreSQL)
    r"|;"
    r"|[^'\"$;/-]+|.",
    re.S,
)


def split_sql(sql):
    """Split a SQL script into ``(line, statement)`` pairs, ``line`` where each statement starts."""
    statements, current, start_line, line = [], [], None, 1
    for match in _SQL_TOKEN.finditer(sql):
        token = match.group()
        if token == ";":
            if start_line is not None:
                statements.append((start_line, "".join(current).strip()))
            current, start_line = [], None
        else:
            is_comment = token.startswith(("--", "/*"))
            if start_line is None and not is_comment and token.strip():
                start_line = line + token[: len(token) - len(token.lstrip())].count("\n")
            if start_line is not None:
                current.append(token)
        line += token.count("\n")
    if start_line is not None:
        statements.append((start_line, "".join(current).strip()))
    return statements


def run_sql_script(sql):
    """Execute the statements in ``sql`` in one transaction, or none of them.

    Statement by statement, so an error can name the line it starts on.
    """
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        if db.engine.dialect.name == "sqlite":
            # sqlite3 opens no transaction around DDL by itself: open one for all.
            cursor.execute("BEGIN")
        for line, statement in split_sql(sql):
            try:
                cursor.execute(statement)
            except db.engine.dialect.loaded_dbapi.Error as exc:
                connection.rollback()
                detail = str(exc).strip().splitlines()[0]
                raise SQLScriptError(f"line {line}: {detail}") from exc
        connection.commit()
    finally:
        connection.close()
