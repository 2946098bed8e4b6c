"""Secrets read from files, as the official postgres image takes them: ``VAR`` or ``VAR_FILE``.

A Compose or Kubernetes secret is a file; naming its path (``SECRET_KEY_FILE=/run/secrets/secret_key``)
keeps the value out of the container's configuration (``docker inspect``). With neither set,
``/run/secrets/<var in lower case>`` is used when it exists (Compose's default place). Both
``manage.py`` and ``wsgi.py`` call ``load()`` before the app reads its configuration, so a command run
with ``docker compose exec`` (which skips the image's entrypoint) sees the same secrets as the server.

  SECRET_KEY               Flask's secret key
  POSTGRES_PASSWORD        the database password, handed to libpq as PGPASSWORD (DATABASE_URL names none)
  STARTER_ADMIN_PASSWORD   bootstrap's admin, when STARTER_ADMIN_USERNAME is set
  DATABASE_URL             a whole URL, when it holds a password (an external database)
  RATELIMIT_STORAGE_URI    likewise, for a Redis with a password
"""

import os
from pathlib import Path

NAMES = ("SECRET_KEY", "POSTGRES_PASSWORD", "STARTER_ADMIN_PASSWORD", "DATABASE_URL", "RATELIMIT_STORAGE_URI")
SECRETS_DIR = Path("/run/secrets")


class SecretFileError(Exception):
    pass


def _read(name, environ):
    value, path = environ.get(name, ""), environ.get(f"{name}_FILE", "")
    if value and path:
        raise SecretFileError(f"both {name} and {name}_FILE are set (give one)")
    if not value and not path and (SECRETS_DIR / name.lower()).is_file():
        path = str(SECRETS_DIR / name.lower())
    if not path:
        return value
    try:
        # A trailing newline is an editor's, not the secret's.
        value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SecretFileError(f"{name}_FILE: cannot read {path} ({exc.strerror})") from None
    if not value:
        raise SecretFileError(f"{name}_FILE: {path} is empty")
    return value


def load(environ=os.environ):
    """Set each secret in ``environ`` from its file; PGPASSWORD from POSTGRES_PASSWORD."""
    for name in NAMES:
        value = _read(name, environ)
        if value:
            environ[name] = value
    if environ.get("POSTGRES_PASSWORD") and not environ.get("PGPASSWORD"):
        environ["PGPASSWORD"] = environ["POSTGRES_PASSWORD"]
