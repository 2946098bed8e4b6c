"""The database: one place for engine settings, schema set-up and SQL loading."""

import time
from pathlib import Path

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase

STARTER_SQL = Path(__file__).resolve().parent.parent / "data" / "starter_pxcodes.sql"


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


def engine_options(url, connect_timeout):
    """Return engine options for ``url``: bounded connects, stale links dropped."""
    options = {"pool_pre_ping": True}
    if make_url(url).get_backend_name() == "postgresql":
        options["connect_args"] = {"connect_timeout": connect_timeout}
    return options


def masked_url(url):
    """Return ``url`` fit for a log line: the password replaced by ``***``."""
    return make_url(url).render_as_string(hide_password=True)


def init_app(app):
    """Bind the database extension to ``app`` with its engine options."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS",
        engine_options(url, app.config["DB_CONNECT_TIMEOUT"]),
    )
    db.init_app(app)


def create_tables():
    """Create the tables that are missing; existing data is kept."""
    db.create_all()


def recreate_tables():
    """Drop every table and create it again, empty (the seed's ``createdb``)."""
    db.drop_all()
    db.create_all()


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


def run_sql_script(sql):
    """Execute the statements in ``sql`` in one transaction, or none of them."""
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        if db.engine.dialect.name == "sqlite":
            # sqlite3 only runs several statements through executescript,
            # which commits per statement unless the script opens a transaction.
            cursor.executescript(f"BEGIN;\n{sql}\n;COMMIT;")
        else:
            cursor.execute(sql)
            connection.commit()
    except db.engine.dialect.loaded_dbapi.Error as exc:
        connection.rollback()
        raise SQLScriptError(str(exc).strip().splitlines()[0]) from exc
    finally:
        connection.close()
