"""Logging: to stderr always, and to a rotating file when ``LOG_DIR`` is set."""

import logging
import logging.handlers
import os
import sys

from flask.logging import default_handler

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE = "starter-api.log"


def init_app(app):
    """Give ``app.logger`` its handlers (once, even when the factory runs again)."""
    logger = app.logger
    logger.setLevel(app.config["LOG_LEVEL"])
    for handler in list(logger.handlers):
        if getattr(handler, "_starter", False):
            logger.removeHandler(handler)
            handler.close()
    handlers = [logging.StreamHandler(sys.stderr)]
    log_dir = app.config.get("LOG_DIR")
    problem = None
    if log_dir:
        try:
            os.makedirs(log_dir, exist_ok=True)
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    os.path.join(log_dir, LOG_FILE), maxBytes=10 * 2**20, backupCount=5
                )
            )
        except OSError as exc:
            # A log folder we cannot write must not stop the service: stderr still works.
            problem = f"cannot write logs to {log_dir} ({exc.strerror}); logging to stderr only"
    for handler in handlers:
        handler._starter = True
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    # Flask's default stderr handler would print every line twice.
    logger.removeHandler(default_handler)
    if problem:
        logger.warning(problem)


def log_startup(app):
    """Say what a serving process runs with (CLI commands print only their result)."""
    from . import GENERATED_SECRET_KEY
    from .db import masked_url

    key_file = app.extensions.get(GENERATED_SECRET_KEY)
    if key_file:
        app.logger.warning(
            "SECRET_KEY is not set: using a generated development key kept in %s"
            " (set SECRET_KEY in production)",
            key_file,
        )
    app.logger.info(
        "starter-api ready: config=%s database=%s",
        app.config["NAME"],
        masked_url(app.config["SQLALCHEMY_DATABASE_URI"]),
    )
