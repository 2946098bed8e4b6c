#!/bin/sh
# Entrypoint of the local nginx:1.28 stand-in. As the official image's: when the command is nginx (or
# nginx-debug), run the executable scripts in /docker-entrypoint.d (and source *.envsh) first, unless
# NGINX_ENTRYPOINT_QUIET_LOGS silences their messages; then run the command as given.
set -e

say() { [ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: $*"; }

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
	for f in /docker-entrypoint.d/*; do
		[ -e "$f" ] || break
		case "$f" in
			*.envsh) if [ -x "$f" ]; then say "sourcing $f"; . "$f"; fi ;;
			*.sh) if [ -x "$f" ]; then say "running $f"; "$f"; fi ;;
			*) say "ignoring $f" ;;
		esac
	done
	say "configuration complete; ready for start up"
fi

exec "$@"
