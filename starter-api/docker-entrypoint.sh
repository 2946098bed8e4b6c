#!/bin/sh
# starter-api container entrypoint.
#   (default) python serve.py   the server (granian; its settings: serve.py). It does not touch the
#                               schema: `python manage.py bootstrap` does that once per rollout, in
#                               docker-compose.yml's one-shot `migrate` service (Kubernetes: a Job).
#   any other command           run as given, e.g. `/bin/sh` or `python manage.py createdb`.
# Secrets (SECRET_KEY, POSTGRES_PASSWORD, or their *_FILE forms) are read by the Python entry points
# themselves (secret_files.py), so `docker compose exec ... python manage.py` sees them too.
set -eu

[ "$#" -gt 0 ] || set -- python serve.py

# Logs go to stdout/stderr (docker logs, rotated by Docker). LOG_FILE asks for a file as well: one
# process (logtee.py) then writes it for all the server's processes, and passes signals on.
if [ -n "${LOG_FILE:-}" ]; then
	set -- python /app/logtee.py "$LOG_FILE" -- "$@"
fi

# exec: the command becomes this process, so docker stop's SIGTERM reaches it.
exec "$@"
