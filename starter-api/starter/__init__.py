"""starter-api: a REST service for medical procedure codes."""

import os
import secrets
from collections.abc import Mapping

from flask import Flask

from . import auth, cli, config, db, limits, observability, readcache
from .http import bodies, errors, headers, hosts, turns
from .http.environ import without_process_environment
from .http.unread_body import closing_after_unread_body

SECRET_KEY_FILE = "secret-key"


def create_app(test_config=None):
    """Create the app.

    ``test_config`` may be a profile name, or a mapping laid over the testing
    profile; by default the profile named by ``$FLASK_CONFIG`` is used.
    """
    # No app-wide static folder: the pages' files are the web blueprint's, at /static.
    app = Flask(__name__, instance_relative_config=True, static_folder=None)
    if isinstance(test_config, Mapping):
        app.config.from_mapping(config.load("testing"))
        app.config.from_mapping(test_config)
    else:
        app.config.from_mapping(config.load(test_config))
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        os.makedirs(app.instance_path, exist_ok=True)
        path = os.path.join(app.instance_path, "starter.sqlite")
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{path}"
    config.check_production(app.config)
    observability.logs.init_app(app)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _development_secret_key(app)

    observability.init_app(app)
    db.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    limits.init_app(app)
    hosts.init_app(app)
    auth.init_app(app)
    cli.init_app(app)
    _register_blueprints(app)
    _enable_cors(app)
    # Under the read cache: a replay never hands the environ to any code.
    app.wsgi_app = without_process_environment(app.wsgi_app)
    # Bodies read with a deadline and a size limit; the read cache in front never sees one.
    bodies.init_app(app)
    readcache.init_app(app)
    app.wsgi_app = closing_after_unread_body(app.wsgi_app)
    turns.init_app(app)  # under the observer: a request's time counts its wait for a turn
    observability.wrap(app)
    _trust_forwarded_headers(app)
    return app


def _register_blueprints(app):
    from . import health, tokens
    from .api import bp as api_bp
    from .web import bp as web_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(web_bp)


def _trust_forwarded_headers(app):
    """Behind ``FORWARDED_PROXIES`` proxies, take the client's address and scheme from them.

    Outermost, so the read cache and the rate limits see the rewritten request.
    """
    proxies = app.config["FORWARDED_PROXIES"]
    if proxies > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)


def _enable_cors(app):
    """Allow the browsers of ``CORS_ORIGINS`` to call the API; closed when unset."""
    if not app.config["CORS_ORIGINS"]:
        return
    from flask_cors import CORS

    CORS(
        app,
        resources={
            r"/api/*": {"origins": app.config["CORS_ORIGINS"]},
            r"/auth/*": {"origins": app.config["CORS_ORIGINS"]},
        },
        allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match"],
        expose_headers=[
            "ETag",
            "Link",
            "Location",
            "Retry-After",
            "X-Total-Count",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ],
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
    )


def _development_secret_key(app):
    """Make up a key once and keep it in the instance folder, so tokens survive restarts."""
    os.makedirs(app.instance_path, exist_ok=True)
    path = os.path.join(app.instance_path, SECRET_KEY_FILE)
    try:
        with open(path) as f:
            key = f.read().strip()
    except FileNotFoundError:
        key = ""
    if not key:
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
    app.extensions[observability.logs.GENERATED_SECRET_KEY] = path  # announced when serving (log_startup)
    return key
