#!/bin/sh
# starter-api container entrypoint.
#   (default) gunicorn ...   prepare the database (`python manage.py bootstrap`: wait for it, create missing
#                            tables, load the starter codes into an empty table), then exec the server.
#   any other command        run as given, e.g. `/bin/sh` or `python manage.py createdb`.
set -eu

# The app logs to files under LOG_DIR and to stderr. A host folder bind-mounted there that this user
# cannot write (docker creates a missing ./logs as root) would stop the app: log to stderr only instead.
if [ -n "${LOG_DIR:-}" ] && ! { mkdir -p "$LOG_DIR" 2>/dev/null && [ -w "$LOG_DIR" ]; }; then
	echo "docker-entrypoint: warning: LOG_DIR $LOG_DIR is not writable by uid $(id -u);" \
		"logging to stderr only (on the host: mkdir -p logs && chmod a+rwx logs; make up does it)" >&2
	unset LOG_DIR
fi

# libpq (psql, and the app when DATABASE_URL names no password) reads PGPASSWORD; .env names it
# POSTGRES_PASSWORD.
if [ -z "${PGPASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD:-}" ]; then
	export PGPASSWORD="$POSTGRES_PASSWORD"
fi

if [ "${1:-gunicorn}" = gunicorn ]; then
	[ "$#" -gt 0 ] || set -- gunicorn -c gunicorn.conf.py wsgi:app
	python manage.py bootstrap
fi

exec "$@"
