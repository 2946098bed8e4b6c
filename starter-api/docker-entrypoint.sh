#!/bin/sh
# starter-api container entrypoint.
#   (default) python serve.py   prepare the database (`python manage.py bootstrap`: wait for it, create
#                               missing tables, load the starter codes into an empty table), then exec the
#                               server (granian; its settings: serve.py).
#   any other command           run as given, e.g. `/bin/sh` or `python manage.py createdb`.
set -eu

# A LOG_DIR this user cannot write (docker makes a missing ./logs as root) is handled by the app
# itself: it logs to stderr only and says so.

# libpq (psql, and the app when DATABASE_URL names no password) reads PGPASSWORD; .env names it
# POSTGRES_PASSWORD.
if [ -z "${PGPASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD:-}" ]; then
	export PGPASSWORD="$POSTGRES_PASSWORD"
fi

[ "$#" -gt 0 ] || set -- python serve.py
if [ "$1" = python ] && [ "${2:-}" = serve.py ]; then
	python manage.py bootstrap
fi

# exec: the server becomes this process, so docker stop's SIGTERM reaches it.
exec "$@"
