"""A ``serve.py`` target for fault tests: the real app, which loses its database right after a commit.

Only for a request carrying ``X-Test-Fault: after-commit``: once its transaction has committed,
the database stops taking connections (``ALLOW_CONNECTIONS false``) and every backend of it is
terminated, so anything the request still asks of the database fails. The test restores it.
"""

import os

from flask import has_request_context, request
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from starter import create_app

FAULT_HEADER = "X-Test-Fault"

app = create_app()
_url = make_url(os.environ["DATABASE_URL"])
_database = _url.database
# Connected to another database of the server: the one under test refuses connections meanwhile.
_admin = create_engine(_url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")


@event.listens_for(Session, "after_commit")
def _lose_the_database(session):
    if not has_request_context() or request.headers.get(FAULT_HEADER) != "after-commit":
        return
    with _admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{_database}" WITH ALLOW_CONNECTIONS false'))
        connection.execute(
            text("SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity"
                 " WHERE datname = :name AND pid <> pg_backend_pid()"),
            {"name": _database},
        )
