"""The factory, configuration, health probes, error bodies and logging."""

import logging

import pytest

from starter import create_app
from starter.config import ConfigError, load
from starter.observability.logs import log_startup


def test_testing_profile(app):
    assert app.testing
    assert not app.debug


def test_default_profile_is_development_with_debug_off(monkeypatch, tmp_path):
    for name in ("FLASK_CONFIG", "FLASK_DEBUG", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/x.sqlite")
    settings = load()
    assert settings["NAME"] == "development"
    assert settings["DEBUG"] is False


def test_environment_is_read(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://u:p@db/x")
    monkeypatch.setenv("TOKEN_EXPIRATION", "60")
    monkeypatch.setenv("FLASK_DEBUG", "1")
    settings = load("development")
    assert settings["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://u:p@db/x"
    assert settings["TOKEN_EXPIRATION"] == 60
    assert settings["DEBUG"] is True


@pytest.mark.parametrize("url", ["postgresql://u:p@db/x", "postgres://u:p@db/x"])
def test_a_postgresql_url_without_driver_uses_psycopg2(monkeypatch, url):
    # SQLAlchemy 2.1 would pick psycopg 3, which is not installed.
    monkeypatch.setenv("DATABASE_URL", url)
    assert load("development")["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://u:p@db/x"


def test_a_malformed_database_url_is_a_config_error(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "not a url")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load("development")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLASK_CONFIG": "staging"}, "unknown FLASK_CONFIG 'staging'"),
        ({"TOKEN_EXPIRATION": "soon"}, "TOKEN_EXPIRATION must be an integer"),
        ({"SERVER_THREADS": "0"}, "SERVER_THREADS must be 1 or more"),
        ({"FLASK_CONFIG": "production", "SECRET_KEY": ""}, "production needs SECRET_KEY"),
        ({"FLASK_CONFIG": "production", "SECRET_KEY": "k", "FLASK_DEBUG": "1"}, "refuses"),
    ],
)
def test_bad_configuration_refuses_to_start(monkeypatch, tmp_path, env, message):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/x.sqlite")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        create_app()


def test_development_makes_up_a_secret_key_once(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/x.sqlite")
    monkeypatch.setattr("flask.Flask.auto_find_instance_path", lambda self: str(tmp_path / "inst"))
    first = create_app("development")
    with caplog.at_level(logging.WARNING, logger="starter"):
        log_startup(first)  # the server announces it; CLI commands do not
    assert "SECRET_KEY is not set" in caplog.text
    assert first.config["SECRET_KEY"] not in caplog.text
    second = create_app("development")
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert len(first.config["SECRET_KEY"]) >= 32
    assert (tmp_path / "inst" / "secret-key").stat().st_mode & 0o077 == 0


def test_log_files_and_no_secrets_in_logs(make_app, tmp_path):
    log_dir = tmp_path / "logs"
    url = "postgresql+psycopg2://docker:hunter2@127.0.0.1:9/starter"
    app = make_app(LOG_DIR=str(log_dir), SQLALCHEMY_DATABASE_URI=url, SECRET_KEY="topsecret")
    log_startup(app)
    client = app.test_client()
    client.get("/api/v1.0/pxcodes/", auth=("alice", "wonderland"))  # the DB is down: 503, logged
    logged = (log_dir / "starter-api.log").read_text()
    assert "starter-api ready" in logged
    assert "docker:***@127.0.0.1" in logged
    for secret in ("hunter2", "topsecret", "wonderland"):
        assert secret not in logged


def test_healthz_needs_no_auth_and_no_database(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://x@127.0.0.1:9/x", DB_CONNECT_TIMEOUT=1)
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready"}


def test_readyz_is_503_when_the_database_is_down(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://x@127.0.0.1:9/x", DB_CONNECT_TIMEOUT=1)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == 503
    assert response.headers["Retry-After"] == "1"


def test_api_is_503_json_when_the_database_is_down(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://x@127.0.0.1:9/x", DB_CONNECT_TIMEOUT=1)
    response = app.test_client().get("/api/v1.0/pxcodes/", auth=("alice", "wonderland"))
    assert response.status_code == 503
    assert response.json["error"] == "Service Unavailable"
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    ("method", "url", "status", "allow"),
    [
        ("DELETE", "/api/v1.0/pxcodes/", 405, "GET, HEAD, OPTIONS, POST"),
        ("POST", "/api/v1.0/pxcodes/039", 405, "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"),
        ("POST", "/healthz", 405, "GET, HEAD, OPTIONS"),
        ("GET", "/nowhere", 404, None),
    ],
)
def test_routing_errors_are_json(client, auth, method, url, status, allow):
    response = client.open(url, method=method, headers=auth.basic())
    assert response.status_code == status
    assert response.content_type == "application/json"
    assert response.json["status"] == status
    if allow:
        assert set(response.headers["Allow"].split(", ")) == set(allow.split(", "))


def test_unexpected_errors_are_a_json_500_without_traceback(make_app, auth):
    app = make_app(TESTING=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json == {
        "status": 500,
        "error": "Internal Server Error",
        "message": response.json["message"],
    }
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_trailing_slash_redirects_keep_working(client, auth):
    response = client.get("/api/v1.0/pxcodes", headers=auth.basic())
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/api/v1.0/pxcodes/")


def test_unwritable_log_folder_falls_back_to_stderr(make_app, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    with caplog.at_level(logging.WARNING, logger="starter"):
        app = make_app(LOG_DIR=str(blocker / "logs"))
    assert "logging to stderr only" in caplog.text
    assert app.test_client().get("/healthz").status_code == 200


def test_the_process_environment_does_not_reach_requests():
    from werkzeug.test import EnvironBuilder

    from starter.http.environ import without_process_environment

    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("204 No Content", [])
        return []

    process = {"SECRET_KEY": "s3cret", "HTTP_PROXY": "http://evil", "SERVER_NAME": "ignored", "HOME": "/app"}
    environ = EnvironBuilder(path="/x", headers={"X-Real": "1"}).get_environ()
    server_name = environ["SERVER_NAME"]
    environ = {**process, **environ}  # as granian builds it: the process's, then the request's
    without_process_environment(app, process)(environ, lambda *a: None)
    assert "SECRET_KEY" not in seen and "HOME" not in seen
    assert "HTTP_PROXY" not in seen  # no request header of that name was sent
    assert seen["HTTP_X_REAL"] == "1" and seen["SERVER_NAME"] == server_name
    assert seen["PATH_INFO"] == "/x"


def test_the_app_never_sees_the_process_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STARTER_CANARY", "do-not-leak")
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.sqlite"})
    seen = {}

    @app.get("/environ-probe")
    def probe():
        from flask import request

        seen.update(request.environ)
        return "", 204

    # As granian builds an environ: the process's variables first, then the request's.
    app.test_client().get("/environ-probe", environ_base={"STARTER_CANARY": "do-not-leak"})
    assert seen and "STARTER_CANARY" not in seen
