"""manage.py commands: createdb, adduser, loaddata, bootstrap; errors are one line, exit 1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from starter.db import STARTER_SQL, db, drop_tables
from starter.models import PxCode, User

PROJECT = Path(__file__).resolve().parent.parent


def _count(app, model=PxCode):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def _assert_one_line_error(result, text):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ")
    assert text in lines[-1]
    assert "Traceback" not in result.output


def test_createdb_drops_and_recreates(app, runner):
    assert _count(app) == 100
    result = runner.invoke(args=["createdb"])
    assert result.exit_code == 0, result.output
    assert "Created empty tables starter_pxcodes, starter_users" in result.output
    assert _count(app) == 0
    assert _count(app, User) == 0


def test_adduser_with_password(app, runner, client):
    result = runner.invoke(args=["adduser", "admin", "admin"])
    assert result.exit_code == 0, result.output
    assert "User 'admin' added" in result.output
    assert client.get("/api/v1.0/pxcodes/039", auth=("admin", "admin")).status_code == 200


def test_adduser_prompts_twice(app, runner, client):
    result = runner.invoke(args=["adduser", "carol"], input="s3cret\ns3cret\n")
    assert result.exit_code == 0, result.output
    assert "Password:" in result.output and "Repeat for confirmation:" in result.output
    assert "s3cret" not in result.output
    assert client.get("/api/v1.0/pxcodes/039", auth=("carol", "s3cret")).status_code == 200


def test_adduser_prompt_mismatch_fails(app, runner):
    result = runner.invoke(args=["adduser", "carol"], input="one\ntwo\n")
    _assert_one_line_error(result, "the two passwords do not match")
    with app.app_context():
        assert User.by_username("carol") is None


def test_adduser_existing_name_fails(app, runner):
    result = runner.invoke(args=["adduser", "alice", "other"])
    _assert_one_line_error(result, "user 'alice' already exists")
    assert _count(app, User) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["adduser", "a:b", "pw"], "without ':'"),
        (["adduser", "x" * 65, "pw"], "1 to 64 characters"),
        (["adduser", " lead", "pw"], "surrounding spaces"),
        (["adduser", "carol", ""], "password must not be empty"),
    ],
)
def test_adduser_rejects_bad_input(app, runner, args, message):
    _assert_one_line_error(runner.invoke(args=args), message)
    assert _count(app, User) == 2


def test_loaddata_default_file_is_idempotent(empty_app):
    runner = empty_app.test_cli_runner()
    first = runner.invoke(args=["loaddata"])
    assert first.exit_code == 0, first.output
    assert "100 codes added, 100 in starter_pxcodes" in first.output
    second = runner.invoke(args=["loaddata"])
    assert second.exit_code == 0, second.output
    assert "0 codes added, 100 in starter_pxcodes" in second.output
    assert _count(empty_app) == 100


def test_loaddata_given_file(empty_app, tmp_path):
    path = tmp_path / "two.sql"
    path.write_text(
        "INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('A1', 'ONE');\n"
        "INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('A2', 'TWO');\n"
    )
    result = empty_app.test_cli_runner().invoke(args=["loaddata", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 codes added" in result.output


def test_loaddata_failing_file_writes_nothing(empty_app, tmp_path):
    path = tmp_path / "bad.sql"
    path.write_text(
        "INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('A1', 'ONE');\n"
        "INSERT INTO no_such_table VALUES (1);\n"
    )
    result = empty_app.test_cli_runner().invoke(args=["loaddata", str(path)])
    _assert_one_line_error(result, "nothing was loaded")
    assert "no_such_table" in result.output
    assert _count(empty_app) == 0


def test_loaddata_missing_file_fails(empty_app, tmp_path):
    result = empty_app.test_cli_runner().invoke(args=["loaddata", str(tmp_path / "nope.sql")])
    _assert_one_line_error(result, "cannot read")


def test_bootstrap_prepares_a_new_database(make_app, database_url):
    app = make_app(STARTER_ADMIN_USERNAME="admin", STARTER_ADMIN_PASSWORD="admin")
    with app.app_context():
        drop_tables()
    result = app.test_cli_runner().invoke(args=["bootstrap"])
    assert result.exit_code == 0, result.output
    assert "Loaded 100 starter codes" in result.output
    assert "Admin 'admin' added" in result.output
    assert _count(app) == 100
    assert app.test_client().get("/api/v1.0/pxcodes/039", auth=("admin", "admin")).status_code == 200


def test_bootstrap_keeps_existing_data(app):
    client = app.test_client()
    created = client.post(
        "/api/v1.0/pxcodes/", json={"pxcode": "X1", "procedure": "KEPT"}, auth=("alice", "wonderland")
    )
    assert created.status_code == 201
    result = app.test_cli_runner().invoke(args=["bootstrap"])
    assert result.exit_code == 0, result.output
    assert "Loaded" not in result.output
    assert "User" not in result.output
    assert _count(app) == 101


def test_bootstrap_without_admin_settings_adds_no_user(make_app):
    app = make_app()
    with app.app_context():
        drop_tables()
    result = app.test_cli_runner().invoke(args=["bootstrap"])
    assert result.exit_code == 0, result.output
    assert _count(app, User) == 0


def test_bootstrap_gives_up_on_unreachable_database(tmp_path):
    from starter import create_app

    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg2://nobody@127.0.0.1:9/none",
            "SECRET_KEY": "x",
            "DB_WAIT_TIMEOUT": 0,
            "DB_CONNECT_TIMEOUT": 1,
        }
    )
    result = app.test_cli_runner().invoke(args=["bootstrap"])
    _assert_one_line_error(result, "database unavailable")


def _manage(*args, env):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_py_runs_the_seed_commands(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/manage.sqlite",
        "SECRET_KEY": "x",
        "FLASK_CONFIG": "production",
        "LOG_DIR": str(tmp_path / "logs"),
    }
    for args in (["createdb"], ["adduser", "admin", "admin"], ["loaddata"]):
        result = _manage(*args, env=env)
        assert result.returncode == 0, result.stderr
    result = _manage("adduser", "admin", "admin", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "Error: user 'admin' already exists"
    assert "run" in _manage("--help", env=env).stdout


def test_manage_py_refuses_production_without_secret_key(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite", "SECRET_KEY": "", "FLASK_CONFIG": "production"}
    result = _manage("createdb", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: production needs SECRET_KEY set in the environment"
    )
    assert "Traceback" not in result.stderr


def test_manage_py_commands_print_their_result_only(tmp_path):
    """No log lines around a command's result (the dev key, "ready"): one line out, nothing on stderr."""
    url = f"sqlite:///{tmp_path}/quiet.sqlite"
    env = {"DATABASE_URL": url, "SECRET_KEY": "", "FLASK_CONFIG": "development", "LOG_DIR": ""}
    expected = {
        ("createdb",): f"Created empty tables starter_pxcodes, starter_users in {url}",
        ("loaddata",): f"Loaded {STARTER_SQL}: 100 codes added, 100 in starter_pxcodes",
        ("adduser", "admin", "admin"): "User 'admin' added",
    }
    for args, line in expected.items():
        result = _manage(*args, env=env)
        assert (result.returncode, result.stdout, result.stderr) == (0, line + "\n", ""), args


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "DB_CONNECT_TIMEOUT": "1"},
         "Error: database unavailable: "),
        ({"DATABASE_URL": "mysql://u:p@127.0.0.1/x"},
         "Error: DATABASE_URL: 'mysql' is not supported (use postgresql or sqlite)"),
        ({"READ_CACHE": "flase"}, "Error: READ_CACHE must be on or off (1/0, true/false, yes/no), got 'flase'"),
    ],
)
def test_manage_py_errors_are_one_line(tmp_path, env, error):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite", "SECRET_KEY": "x", "LOG_DIR": "", **env}
    result = _manage("createdb", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(error), result.stderr


def test_starter_sql_holds_the_100_seed_codes():
    text = STARTER_SQL.read_text()
    assert text.count("\n    ('") == 100
    assert "('039', 'EXTRACRANIAL PROCEDURES W/O CC/MCC')" in text
    assert (PROJECT.parent / "data" / "starter_pxcodes.sql").read_text() == text


def test_createdb_makes_both_seed_tables(app, runner):
    runner.invoke(args=["createdb"])
    with app.app_context():
        assert set(inspect(db.engine).get_table_names()) >= {"starter_pxcodes", "starter_users"}


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"FLASK_CONFIG": "production", "SECRET_KEY": ""}, "Error: production needs SECRET_KEY set in the environment"),
        ({"WEB_CONCURRENCY": "zero"}, "Error: WEB_CONCURRENCY must be an integer, got 'zero'"),
        ({"SERVER_ACCESS_LOG": "flase"}, "Error: SERVER_ACCESS_LOG must be on or off (1/0, true/false, yes/no), got 'flase'"),
        ({"SERVER_DRAIN_TIMEOUT": "-1"}, "Error: SERVER_DRAIN_TIMEOUT must be 0 or more, got '-1'"),
        ({"DATABASE_URL": "mysql://u:p@127.0.0.1/x"}, "Error: DATABASE_URL: 'mysql' is not supported (use postgresql or sqlite)"),
    ],
)
def test_serve_py_refuses_a_bad_environment_in_one_line(tmp_path, env, error):
    """Before granian starts workers that would die one after the other, printing tracebacks."""
    result = subprocess.run(
        [sys.executable, "serve.py"], cwd=PROJECT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite", "PORT": "1", **env},
    )
    assert (result.returncode, result.stdout, result.stderr) == (1, "", error + "\n")
