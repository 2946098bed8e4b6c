#!/usr/bin/env bash
# The replica test, without Docker: three `python serve.py` replicas on loopback ports behind nginx
# running the project's own proxy configuration (proxy/nginx.conf, the Compose proxy's file), one
# PostgreSQL and one Redis of their own; see stack/replicas.py for what it checks and prints.
#
#   sudo bash stack/test-replicas.sh        (root, Debian; run by .ci/run; ~2 minutes)
#
# Installs what is missing: nginx, redis-server, the PostgreSQL server, wrk (Debian), and the service's
# venv starter-api/.venv (the README's test command makes the same one). Ports: 27000-27999, loopback.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=stack/lib.sh
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (it installs packages; PostgreSQL runs as the user postgres)"

# Debian's nginx package starts a server on port 80 when installed; nothing here wants that one.
if ! command -v nginx >/dev/null 2>&1; then
	if [ -e /usr/sbin/policy-rc.d ]; then
		install_packages nginx
	else
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
		install_packages nginx
		rm -f /usr/sbin/policy-rc.d
		trap - EXIT
	fi
fi
ensure_packages redis-server:redis-server wrk:wrk
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || install_packages postgresql

python="${REPLICAS_PYTHON:-$repo/starter-api/.venv/bin/python}"
if [ ! -x "$python" ]; then
	log "making starter-api/.venv (requirements-dev.txt)"
	(cd "$repo/starter-api" && python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt)
fi

exec "$python" "$here/replicas.py"
