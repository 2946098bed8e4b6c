#!/usr/bin/env bash
# Entrypoint of the local redis:8 stand-in. It keeps the official image's contract as far as the stack uses it:
#   a first argument `-...` or `*.conf` means `redis-server ARGS`; redis-server started as root chowns the
#   files in /data it cannot use to redis and drops to the user redis (SKIP_DROP_PRIVS=1, SKIP_FIX_PERMS=1
#   as in the official image); umask 0077 unless another one was set; protected mode off by default (the
#   official image compiles it so; Debian's build has it on, so it is passed as an argument that the
#   command line or the config file can still set). Any other command is run as given.
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

is_server=
cmd=$(command -v "$1" 2>/dev/null || :)
if [ -n "$cmd" ] && [ "$(readlink -f "$cmd")" = "$(readlink -f /usr/bin/redis-server)" ] \
	&& [ "$(basename "$1")" = redis-server ]; then
	is_server=1
	for arg in "$@"; do
		[ "$arg" != --sentinel ] || is_server=
	done
fi

if [ -n "$is_server" ] && [ "$(id -u)" = 0 ] && [ -z "${SKIP_DROP_PRIVS:-}" ]; then
	if [ -z "${SKIP_FIX_PERMS:-}" ]; then
		find . \! -user redis -exec chown redis '{}' +
	fi
	exec setpriv --reuid redis --regid redis --clear-groups "$0" "$@"
fi

if [ "$(umask)" = 0022 ]; then
	umask 0077
fi

if [ -n "$is_server" ]; then
	# `redis-server [CONFIG] [--opt value ...]`: add `--protected-mode no` right after CONFIG (or the
	# command), before the given options, unless they or the config file set it themselves.
	at=1
	if [ $# -ge 2 ] && [ "${2#-}" = "$2" ]; then
		at=2
	fi
	set_here=
	for arg in "$@"; do
		[ "$arg" != --protected-mode ] || set_here=1
	done
	if [ "$at" = 2 ] && [ -f "$2" ] && grep -Eqi '^[[:space:]]*protected-mode[[:space:]]' "$2"; then
		set_here=1
	fi
	if [ -z "$set_here" ]; then
		head=("${@:1:$at}")
		shift "$at"
		set -- "${head[@]}" --protected-mode no "$@"
	fi
	echo "Starting Redis Server"
fi

exec "$@"
