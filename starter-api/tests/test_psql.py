"""The seed's import step: ``psql ... < data/starter_pxcodes.sql`` on the real PostgreSQL."""

import subprocess

from sqlalchemy import text
from sqlalchemy.engine import make_url

from starter.db import STARTER_SQL, db


def _load_with_psql(psql, url):
    # The seed's form: psql -h HOST -U USER DBNAME < data/starter_pxcodes.sql
    with STARTER_SQL.open("rb") as stdin:
        return subprocess.run(
            [psql, "-h", url.host, "-p", str(url.port or 5432), "-U", url.username, url.database],
            stdin=stdin,
            capture_output=True,
            timeout=60,
        )


def test_psql_loads_the_starter_codes(psql, postgres_url, make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI=postgres_url)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["createdb"]).exit_code == 0
    assert runner.invoke(args=["adduser", "admin", "admin"]).exit_code == 0
    url = make_url(postgres_url)
    for _ in range(2):  # loading twice neither fails nor duplicates
        result = _load_with_psql(psql, url)
        assert result.returncode == 0, result.stderr
        assert b"ERROR" not in result.stderr
    with app.app_context():
        assert db.session.scalar(text("SELECT count(*) FROM starter_pxcodes")) == 100
    body = app.test_client().get("/api/v1.0/pxcodes/", auth=("admin", "admin")).json
    assert [i["pxcode"] for i in body["items"][:2]] == ["039", "057"]
    assert body["meta"]["total"] == 100
