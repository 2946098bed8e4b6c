"""Fixtures: an app per database (SQLite and the real PostgreSQL), client, CLI runner, auth.

PostgreSQL tests use a database they create on the server at
``$TEST_POSTGRES_URL`` (default: 127.0.0.1:5432, user postgres) and drop at
the end. Without a server they skip locally but fail in CI (``CI=true``).
"""

import functools
import os
import shutil
import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from helpers import PASSWORD, READER, READER_PASSWORD, USERNAME, AuthActions, in_ci, load_starter_data, recorded_sql

from starter import create_app
from starter import readcache
from starter.api.pxcodes import PAGE_CACHES
from starter.db import db, recreate_tables
from starter.models import User


# The fixtures of real servers (private PostgreSQL, serve.py, Redis) for the fault tests.
pytest_plugins = ("servers",)


def clear_process_caches():
    """Forget what earlier tests' apps left in this process (rate-limit counts); each app has its
    own page caches and remembered credentials."""
    from limits.storage import MemoryStorage

    from starter.limits import limiter

    if isinstance(limiter.storage, MemoryStorage):  # never wipe a shared Redis
        limiter.reset()

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _postgres_unavailable(reason):
    if in_ci():
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not reachable: {reason}")


@pytest.fixture
def psql():
    """The psql client (the seed loads its data with it); required in CI."""
    path = shutil.which("psql")
    if path is None:
        if in_ci():
            pytest.fail("psql is required in CI")
        pytest.skip("psql not installed")
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """Create a throw-away database on the real server; drop it after the session."""
    admin = create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    name = f"starter_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        _postgres_unavailable(str(exc.orig).strip())
    yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _migrated(url):
    """Bring the database at ``url`` to the newest schema, empty."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "x", "LOG_DIR": None})
    with app.app_context():
        recreate_tables()
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """An SQLite file migrated once; each test gets a copy (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("template") / "starter.sqlite"
    _migrated(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url):
    _migrated(postgres_url)
    return postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "starter.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    return request.getfixturevalue("migrated_postgres_url")


def _empty_tables():
    """Empty the tables if the schema is current; otherwise (a test dropped it) rebuild it."""
    tables = set(inspect(db.engine).get_table_names())
    if not {"starter_pxcodes", "starter_users", "starter_data_version", "alembic_version"} <= tables:
        recreate_tables()
        return
    for table in ("starter_pxcodes", "starter_users"):
        db.session.execute(text(f"DELETE FROM {table}"))  # faster than TRUNCATE on tiny tables
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 1, false)"))
    db.session.commit()


@pytest.fixture
def make_app(database_url, tmp_path):
    """Return a factory of apps on a fresh, empty schema of the test database."""
    apps = []

    def make(**overrides):
        settings = {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SECRET_KEY": "test-secret",
            "LOG_DIR": None,
        }
        settings.update(overrides)
        app = create_app(settings)
        clear_process_caches()
        apps.append(app)
        return app

    yield make
    clear_process_caches()
    for app in apps:
        readcache.close(app)
        if PAGE_CACHES in app.extensions:  # a page-anchor build under way ends first
            app.extensions[PAGE_CACHES][0].close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def make_empty_app(make_app):
    """Return a factory of apps whose tables exist but hold nothing."""

    def make(**overrides):
        app = make_app(**overrides)
        with app.app_context():
            _empty_tables()
        return app

    return make


@pytest.fixture
def make_seeded_app(make_empty_app):
    """Return a factory of apps with the 100 starter codes, the admin alice and the reader bob."""

    def make(**overrides):
        app = make_empty_app(**overrides)
        with app.app_context():
            load_starter_data(((USERNAME, PASSWORD, True), (READER, READER_PASSWORD, False)))
        return app

    return make


@pytest.fixture
def empty_app(make_empty_app):
    return make_empty_app()


@pytest.fixture
def app(make_seeded_app):
    return make_seeded_app()


@pytest.fixture
def sql_log(app):
    """Return a context manager that records the SQL statements sent while it is open."""
    return functools.partial(recorded_sql, app)


@pytest.fixture
def password_checks(monkeypatch):
    """The times a password hash is checked (``User.verify_password``; the real check still runs)."""
    checked_at = []
    real = User.verify_password

    def recording(self, password):
        checked_at.append(time.monotonic())
        return real(self, password)

    monkeypatch.setattr(User, "verify_password", recording)
    return checked_at


@pytest.fixture
def hold_hashes(monkeypatch):
    """Call it to make every password check from then on signal ``hashing``, wait for ``release``,
    then answer as the real check does (``refuse``: False) and signal ``checked``:
    ``hashing, release, checked = hold_hashes()``."""
    release = threading.Event()

    def hold(refuse=False):
        hashing, checked = threading.Event(), threading.Event()
        real = User.verify_password

        def held(self, password):
            hashing.set()
            release.wait(10)
            result = False if refuse else real(self, password)
            checked.set()
            return result

        monkeypatch.setattr(User, "verify_password", held)
        return hashing, release, checked

    yield hold
    release.set()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def auth(client):
    return AuthActions(client)
