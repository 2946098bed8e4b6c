"""Configuration profiles, read from the environment (12-factor).

``FLASK_CONFIG`` picks the profile (development, testing, production); every
other setting comes from an environment variable with a safe default. Secrets
have no default: production refuses to start without ``SECRET_KEY``.
"""

import os


def env_number(environ, name, default, kind=int, minimum=None):
    """``environ[name]`` as a ``kind`` (int or float), ``default`` when unset or empty."""
    value = environ.get(name, "").strip()
    if not value:
        return default
    what = "an integer" if kind is int else "a number"
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name} must be {minimum} or more, got {value!r}")
    return number


def env_int(environ, name, default, minimum=None):
    return env_number(environ, name, default, int, minimum)


def env_float(environ, name, default, minimum=None):
    return env_number(environ, name, default, float, minimum)


# The databases the schema, its migrations and the tests are made for.
SUPPORTED_DATABASES = ("postgresql", "sqlite")


def _database_url(environ):
    """``DATABASE_URL``, with a driverless PostgreSQL URL sent to psycopg2 (the driver installed)."""
    value = environ.get("DATABASE_URL") or None
    if value is None:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a database URL (e.g. postgresql://user:pw@host/db)") from None
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg2")
    if url.get_backend_name() not in SUPPORTED_DATABASES:
        raise ConfigError(
            f"DATABASE_URL: {url.get_backend_name()!r} is not supported"
            f" (use {' or '.join(SUPPORTED_DATABASES)})"
        )
    return url.render_as_string(hide_password=False)


def _trusted_hosts(environ, default):
    """``TRUSTED_HOSTS`` as Flask takes it: a list of names, or None for any host (``*``)."""
    value = (environ.get("TRUSTED_HOSTS") or default).strip()
    if value == "*":
        return None
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    if not hosts:
        raise ConfigError("TRUSTED_HOSTS must name at least one host, or be '*' for any")
    return hosts


TRUE, FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def env_bool(environ, name, default=False):
    """``environ[name]`` as on/off (1/0, true/false, yes/no); anything else is a ``ConfigError``."""
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(f"{name} must be on or off (1/0, true/false, yes/no), got {value!r}")



# serve.py gives granian this many threads beyond SERVER_THREADS: a request waiting for its body
# holds one of them (up to REQUEST_BODY_TIMEOUT), never one of the app's turns (http.turns).
REQUEST_BODY_SLOTS = 128


def _log_format(environ):
    value = environ.get("LOG_FORMAT", "").strip().lower() or "text"
    if value not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, got {value!r}")
    return value


class ConfigError(RuntimeError):
    """The environment does not describe a configuration we can run with."""


class Config:
    """Settings shared by every profile."""

    NAME = "base"
    DEBUG = False
    TESTING = False
    # Werkzeug's current default (scrypt). Tests pick a cheaper method.
    PASSWORD_HASH_METHOD = "scrypt"
    # Reject request bodies above this size with 413 before reading them.
    MAX_CONTENT_LENGTH = 64 * 1024
    READ_CACHE = True
    # The names clients may reach the service by (links and redirects are built from
    # the Host header): loopback only until the deployment names its own.
    TRUSTED_HOSTS_DEFAULT = "localhost,127.0.0.1"
    # The worker processes serve.py starts by default: memory:// limits are shared out among them.
    WORKER_PROCESSES_DEFAULT = 2
    PAGE_SIZE_DEFAULT = 100
    PAGE_SIZE_MAX = 100
    RATELIMIT_HEADERS_ENABLED = True
    # If the counters' store (Redis) is unreachable, keep serving: count in memory
    # meanwhile, and give up on a store that does not answer within half a second.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True
    RATELIMIT_STORAGE_OPTIONS = {
        "wrap_exceptions": True,
        "socket_connect_timeout": 0.5,
        "socket_timeout": 0.5,
    }

    @classmethod
    def from_environ(cls, environ=os.environ):
        """Return this profile's settings, overlaid with the environment's."""
        settings = {k: v for k, v in vars(Config).items() if k.isupper()}
        settings.update({k: v for k, v in vars(cls).items() if k.isupper()})
        settings.update(
            SECRET_KEY=environ.get("SECRET_KEY") or None,
            SQLALCHEMY_DATABASE_URI=_database_url(environ),
            DEBUG=env_bool(environ, "FLASK_DEBUG", cls.DEBUG),
            LOG_DIR=environ.get("LOG_DIR") or None,
            LOG_LEVEL=environ.get("LOG_LEVEL", "INFO").upper(),
            LOG_FORMAT=_log_format(environ),
            # One line per request; by default with JSON logs (the Docker image), where nothing else
            # writes one (manage.py run's development server writes its own).
            ACCESS_LOG=env_bool(environ, "ACCESS_LOG", _log_format(environ) == "json"),
            TOKEN_EXPIRATION=env_int(environ, "TOKEN_EXPIRATION", 600),
            DB_CONNECT_TIMEOUT=env_int(environ, "DB_CONNECT_TIMEOUT", 5),
            DB_WAIT_TIMEOUT=env_int(environ, "DB_WAIT_TIMEOUT", 60),
            DB_STATEMENT_TIMEOUT=env_int(environ, "DB_STATEMENT_TIMEOUT", 5000),
            # Seconds the check of a database that seems stuck gives a fresh connection (dbhealth.py).
            DB_PROBE_TIMEOUT=env_float(environ, "DB_PROBE_TIMEOUT", 0.5),
            STARTER_ADMIN_USERNAME=environ.get("STARTER_ADMIN_USERNAME") or None,
            STARTER_ADMIN_PASSWORD=environ.get("STARTER_ADMIN_PASSWORD") or None,
            AUTH_CACHE_SECONDS=env_int(environ, "AUTH_CACHE_SECONDS", 60),
            # Password hashes checked at once per worker; more get 503 (hashing is CPU by design).
            AUTH_PASSWORD_CHECKS=env_int(environ, "AUTH_PASSWORD_CHECKS", 1),
            TRUSTED_HOSTS=_trusted_hosts(environ, cls.TRUSTED_HOSTS_DEFAULT),
            WORKER_PROCESSES=env_int(environ, "WEB_CONCURRENCY", cls.WORKER_PROCESSES_DEFAULT),
            # Requests a worker runs at once (http.turns), whatever threads serve.py's granian lends it;
            # also the connections a worker opens at start.
            SERVER_THREADS=env_int(environ, "SERVER_THREADS", 2, minimum=1),
            # Seconds a server worker may spend warming before it takes traffic (0: none; warmup.py).
            WARMUP_TIMEOUT=env_float(environ, "WARMUP_TIMEOUT", 30.0),
            # Repeated reads answered from memory (PostgreSQL only; docs/read-path.md).
            READ_CACHE=env_bool(environ, "READ_CACHE", cls.READ_CACHE),
            READ_CACHE_MAX_STALE=env_float(environ, "READ_CACHE_MAX_STALE", 2.0),
            READ_CACHE_ENTRIES=env_int(environ, "READ_CACHE_ENTRIES", 1024),
            # ...and the bytes they may hold, per worker (docs/read-path.md: the memory bound).
            READ_CACHE_BYTES=env_int(environ, "READ_CACHE_BYTES", 32 * 1024 * 1024),
            # Request bodies (starter/http/bodies.py): seconds a client has to send a whole body
            # (408 after), and bodies read at once per server process (503 beyond).
            REQUEST_BODY_TIMEOUT=env_float(environ, "REQUEST_BODY_TIMEOUT", 10.0),
            REQUEST_BODY_SLOTS=env_int(environ, "REQUEST_BODY_SLOTS", REQUEST_BODY_SLOTS),
            # Proxies in front that set X-Forwarded-For/-Proto (0: trust no such header).
            FORWARDED_PROXIES=env_int(environ, "FORWARDED_PROXIES", 0),
            # Limits a well-behaved client never meets; failed logins far tighter.
            RATELIMIT_ENABLED=env_bool(environ, "RATELIMIT_ENABLED", True),
            RATELIMIT_STORAGE_URI=environ.get("RATELIMIT_STORAGE_URI") or "memory://",
            # Hits of an API request's limits a worker takes from Redis at once (1: each request
            # counted on its own; docs/api.md, "Counters taken in batches").
            RATELIMIT_BATCH=env_int(environ, "RATELIMIT_BATCH", 32, minimum=1),
            RATELIMIT_PER_USER=environ.get("RATELIMIT_PER_USER") or "500 per second",
            RATELIMIT_PER_ADDRESS=environ.get("RATELIMIT_PER_ADDRESS") or "1000 per second",
            # Per user name; per address looser (one address may be many users behind a proxy).
            RATELIMIT_FAILED_LOGINS=environ.get("RATELIMIT_FAILED_LOGINS") or "30 per minute",
            RATELIMIT_FAILED_LOGINS_PER_ADDRESS=(
                environ.get("RATELIMIT_FAILED_LOGINS_PER_ADDRESS") or "300 per minute"
            ),
            CORS_ORIGINS=[
                o.strip() for o in environ.get("CORS_ORIGINS", "").split(",") if o.strip()
            ],
        )
        if settings["WORKER_PROCESSES"] < 1 or settings["AUTH_PASSWORD_CHECKS"] < 1:
            raise ConfigError("WEB_CONCURRENCY and AUTH_PASSWORD_CHECKS must be at least 1")
        if "MAX_CONTENT_LENGTH" in environ:
            settings["MAX_CONTENT_LENGTH"] = env_int(
                environ, "MAX_CONTENT_LENGTH", cls.MAX_CONTENT_LENGTH
            )
        return settings


class DevelopmentConfig(Config):
    """Local runs: a made-up secret key is allowed (and announced)."""

    NAME = "development"
    WORKER_PROCESSES_DEFAULT = 1  # manage.py run: one process


class TestingConfig(Config):
    """The test suite: cheap password hashing, exceptions propagate."""

    NAME = "testing"
    TESTING = True
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"
    # Off unless a test asks: tests that write with psql read back at once.
    READ_CACHE = False
    # The test client names any host it is given; tests of the check set a list.
    TRUSTED_HOSTS_DEFAULT = "*"
    WORKER_PROCESSES_DEFAULT = 1


class ProductionConfig(Config):
    """The Docker image: a real SECRET_KEY is required and DEBUG is refused."""

    NAME = "production"


PROFILES = {cls.NAME: cls for cls in (DevelopmentConfig, TestingConfig, ProductionConfig)}


def load(name=None, environ=os.environ):
    """Return the settings of profile ``name`` (default: ``$FLASK_CONFIG``)."""
    name = name or environ.get("FLASK_CONFIG") or "development"
    try:
        profile = PROFILES[name]
    except KeyError:
        choices = ", ".join(sorted(PROFILES))
        raise ConfigError(f"unknown FLASK_CONFIG {name!r} (choose {choices})") from None
    return profile.from_environ(environ)


def check_production(config):
    """Refuse settings that must never reach production."""
    if config["NAME"] != "production":
        return
    if not config.get("SECRET_KEY"):
        raise ConfigError("production needs SECRET_KEY set in the environment")
    if config.get("DEBUG"):
        raise ConfigError("production refuses to run with FLASK_DEBUG on")
