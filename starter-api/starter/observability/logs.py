"""Logging: to stderr always, as text or one JSON object a line (``LOG_FORMAT``), and to a file
when ``LOG_DIR`` is set. Every line written while a request runs carries its request id.

JSON lines come from python-json-logger. The file handler is a ``WatchedFileHandler``: several
worker processes write one file (appends of whole lines), and none of them rotates it; rotate it
from outside (logrotate, or Docker's own log rotation for stderr).
"""

import json
import logging
import logging.handlers
import os
import sys

from flask.logging import default_handler
from pythonjsonlogger.json import JsonFormatter

from ..db import masked_url
from .middleware import ACCESS_FIELDS, current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "{asctime}{levelname}{name}{message}{request_id}"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
LOG_FILE = "starter-api.log"
# app.extensions: where the factory notes a development secret key it made up (announced when serving).
GENERATED_SECRET_KEY = "starter_generated_secret_key"
FORMATS = ("text", "json")


class RequestIdFilter(logging.Filter):
    """Stamp the current request's id on each record (None outside a request)."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True


class JsonLines(JsonFormatter):
    """python-json-logger's lines, with a short way for the access line (one per request).

    The access line's fields come as one dict of plain JSON values, so it skips the
    formatter's walk over the record's attributes, most of a line's cost (bench/README.md).
    Its shape is every other line's: the same first keys, then its fields.
    """

    def format(self, record):
        fields = record.__dict__.get(ACCESS_FIELDS)
        if fields is None:
            return super().format(record)
        line = {
            "time": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": record.request_id,
            **fields,
        }
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format):
    if log_format == "json":
        return JsonLines(JSON_FIELDS, style="{", rename_fields=JSON_RENAMES, json_ensure_ascii=False)
    return logging.Formatter(TEXT_FORMAT)


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
            handlers.append(logging.handlers.WatchedFileHandler(os.path.join(log_dir, LOG_FILE)))
        except OSError as exc:
            # A log folder we cannot write must not stop the service: stderr still works.
            problem = f"cannot write logs to {log_dir} ({exc.strerror}); logging to stderr only"
    for handler in handlers:
        handler._starter = True
        handler.setFormatter(formatter(app.config["LOG_FORMAT"]))
        handler.addFilter(RequestIdFilter())
        logger.addHandler(handler)
    # Flask's default stderr handler would print every line twice.
    logger.removeHandler(default_handler)
    if problem:
        logger.warning(problem)


def log_startup(app):
    """Say what a serving process runs with (CLI commands print only their result)."""
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
