#!/usr/bin/env bash
# The stack test: build the Docker Compose stack from the project's own Dockerfiles and compose file,
# bring it up, run the seed's flow against it, show that the data survives `down` + `up`, tear it down.
#
#   sudo bash stack/test-stack.sh        (root, Debian; run by .ci/run after the unit tests)
#
# On a machine of this project's kind (Debian bookworm, root, no Docker Hub, host networking only) it
# installs docker.io and starts dockerd if none runs (and stops it again, by PID, at the end), builds local
# stand-ins for python:3.13-slim, postgres:17, redis:8 and busybox (kept between runs), lints every Dockerfile
# with hadolint, checks the compose file, and runs the stack with docker-compose.hostnet.yml laid over
# docker-compose.yml: postgres on 127.0.0.1:$STACK_PG_PORT (25432), redis on 127.0.0.1:$STACK_REDIS_PORT
# (26379), starter-api on 127.0.0.1:$STACK_API_PORT (25000). Exits non-zero on the first failure, with the
# last lines of the containers' logs.
# Engine, tool venv and logs: /var/cache/starter-stack, /var/log/starter-stack (see stack/lib.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=stack/lib.sh
. "$here/lib.sh"

# Below the kernel's ephemeral range (32768-60999 here): a port in it can be taken at any moment by
# some process's outgoing connection (it was once, between the port check and postgres binding it).
export STACK_PG_PORT="${STACK_PG_PORT:-25432}" STACK_API_PORT="${STACK_API_PORT:-25000}" \
	STACK_REDIS_PORT="${STACK_REDIS_PORT:-26379}"
API="http://127.0.0.1:$STACK_API_PORT"
WAIT_SECS="${STACK_WAIT_SECS:-180}"
CONTAINERS=(postgres_data postgres redis starter-api)
VOLUME=flask-db-docker_postgres_data

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts dockerd)"

work=$(mktemp -d /tmp/starter-stack-test.XXXXXX)
export STACK_LOG_DIR="$work/logs"      # starter-api's /app/logs, instead of ./logs in the repo
envfile="$work/stack.env"
stack_started=0

passed=0
ok() { passed=$((passed + 1)); log "ok: $*"; }

compose() {
	docker compose --env-file "$envfile" --project-directory "$repo" \
		-f "$repo/docker-compose.yml" -f "$repo/docker-compose.hostnet.yml" "$@"
}

container_logs() {
	local c
	for c in "${CONTAINERS[@]}"; do
		docker container inspect "$c" >/dev/null 2>&1 || continue
		printf '\n----- last lines of "docker logs %s" (%s) -----\n' "$c" \
			"$(docker container inspect -f '{{.State.Status}}{{if .State.Health}}, {{.State.Health.Status}}{{end}}' "$c")" >&2
		docker logs --tail 40 "$c" 2>&1 | sed 's/^/  /' >&2
	done
}

finish() {
	local rc=$?
	set +e
	if [ "$rc" -ne 0 ]; then
		log "FAILED in phase '${_phase_name:-?}' (exit $rc)"
		engine_up && container_logs
	fi
	if [ "$stack_started" = 1 ] && engine_up; then
		phase "teardown"
		compose down -v --remove-orphans --timeout 20 >"$work/down.log" 2>&1 \
			|| { cat "$work/down.log" >&2; rc=1; }
		if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
			log "volume $VOLUME still exists after down -v"; rc=1
		elif [ "$rc" -eq 0 ]; then
			ok "down -v removed the containers and the volume $VOLUME"
		fi
		# Old builds of the project images, untagged by this run's build (the stand-ins stay).
		docker image prune -f --filter label=com.docker.compose.image.builder >/dev/null || :
	fi
	stop_engine
	rm -rf "$work"
	print_timings
	if [ "$rc" -eq 0 ]; then log "stack test passed"; else log "stack test FAILED"; fi
	printf 'stack: %d passed, %d failed\n' "$passed" "$((rc != 0))"
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_healthy CONTAINER...: until each one's health is `healthy`; fail early if one stops or turns unhealthy.
wait_healthy() {
	local deadline=$((SECONDS + WAIT_SECS)) c state pending
	while :; do
		pending=()
		for c in "$@"; do
			state=$(docker container inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c" 2>/dev/null) \
				|| die "container $c does not exist"
			case "$state" in
				running/healthy) ;;
				running/unhealthy) die "container $c is unhealthy" ;;
				running/*) pending+=("$c") ;;
				*) die "container $c is not running ($state)" ;;
			esac
		done
		[ ${#pending[@]} -eq 0 ] && return 0
		[ "$SECONDS" -lt "$deadline" ] || die "not healthy after ${WAIT_SECS}s: ${pending[*]}"
		sleep 1
	done
}

port_free() { [ -z "$(ss -Hltn "sport = :$1")" ]; }

# http_get NAME ARGS...: one request with httpie from the tool venv; head and body go to $work/NAME.{head,body}.
http_get() {
	local name="$1"
	shift
	"$STACK_VENV/bin/http" --ignore-stdin --pretty=none --print=hb --timeout 10 "$@" >"$work/$name.raw"
	awk -v head="$work/$name.head" -v body="$work/$name.body" '
		BEGIN { h = 1; printf "" > body }
		h && /^\r?$/ { h = 0; next }
		{ print > (h ? head : body) }' "$work/$name.raw"
}
status_of() { awk 'NR==1 {print $2}' "$work/$1.head"; }
header_of() { awk -v h="$2" 'tolower($1) == tolower(h) ":" {sub(/^[^:]*: */, ""); sub(/\r$/, ""); print}' "$work/$1.head"; }

# check_pxcodes NAME: the seed's page: 200, total 100, items 039 then 057, an ETag. Prints the ETag.
check_pxcodes() {
	local name="$1" status
	status=$(status_of "$name")
	[ "$status" = 200 ] || { cat "$work/$name.head" "$work/$name.body" >&2; die "pxcodes: HTTP $status, expected 200"; }
	python3 - "$work/$name.body" <<-'PY' || die "pxcodes: unexpected body"
		import json, sys
		page = json.load(open(sys.argv[1]))
		codes = [item["pxcode"] for item in page["items"]]
		assert page["meta"]["total"] == 100, page["meta"]
		assert len(codes) == 100 and codes[:2] == ["039", "057"], codes[:5]
		print(f"  total {page['meta']['total']}, items {codes[0]}, {codes[1]}, ... {codes[-1]}", file=sys.stderr)
	PY
	[ -n "$(header_of "$name" ETag)" ] || die "pxcodes: no ETag header"
	header_of "$name" ETag
}

# ---------------------------------------------------------------------------------------------------
phase "engine"
ensure_packages dockerd:docker.io docker:docker.io ss:iproute2
start_engine

phase "tools"
ensure_tools
log "$(docker compose version), $("$STACK_VENV/bin/hadolint" --version)"

phase "base image stand-ins"
bash "$here/build-standins.sh"

phase "lint"
umask 077
printf 'POSTGRES_PASSWORD=%s\nSECRET_KEY=%s\n' \
	"stack-$(python3 -c 'import secrets; print(secrets.token_hex(8))')" \
	"$(python3 -c 'import secrets; print(secrets.token_hex(32))')" >"$envfile"
umask 022
mapfile -t dockerfiles < <(cd "$repo" && find . -name Dockerfile -not -path '*/.venv/*' -not -path './.git/*' | sort)
for f in "${dockerfiles[@]}"; do
	(cd "$repo" && "$STACK_VENV/bin/hadolint" --config .hadolint.yaml --no-color "$f") \
		|| die "hadolint: $f"
done
ok "hadolint: ${#dockerfiles[@]} Dockerfiles clean (${dockerfiles[*]})"
docker compose --env-file "$envfile" --project-directory "$repo" -f "$repo/docker-compose.yml" config -q \
	|| die "docker compose config: docker-compose.yml"
compose config -q || die "docker compose config: docker-compose.yml + docker-compose.hostnet.yml"
ok "docker compose config: docker-compose.yml and the host-network override are valid"

phase "build project images"
compose build >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; die "docker compose build"; }
cp "$work/build.log" "$STACK_LOGS/compose-build.log"
ok "built db/postgres_datastore, db/postgres, starter-api (log: $STACK_LOGS/compose-build.log); redis uses redis:8 as is"

phase "up"
port_free "$STACK_PG_PORT" || die "port $STACK_PG_PORT is taken (set STACK_PG_PORT)"
port_free "$STACK_API_PORT" || die "port $STACK_API_PORT is taken (set STACK_API_PORT)"
port_free "$STACK_REDIS_PORT" || die "port $STACK_REDIS_PORT is taken (set STACK_REDIS_PORT)"
compose down -v --remove-orphans >/dev/null 2>&1 || :   # leftovers of an interrupted run
mkdir -p "$STACK_LOG_DIR" && chmod a+rwx "$STACK_LOG_DIR"
stack_started=1
compose up -d
wait_healthy postgres redis starter-api
docker container inspect postgres_data >/dev/null || die "the data-only container postgres_data does not exist"
if [[ "$(docker network ls --format '{{.Name}}')" == *flask-db-docker* ]]; then
	die "a flask-db-docker network was created; the override must keep every service on the host network"
fi
ok "postgres, redis and starter-api healthy; postgres_data exists ($(docker container inspect -f '{{.State.Status}}' postgres_data))"
# redis: the stand-in (like the official image) drops from root to the user redis (uid 999).
redis_uid=$(docker container top redis -eo pid,uid,args | awk '/redis-server/ {print $2; exit}')
[ "$redis_uid" = 999 ] || die "redis-server runs as uid '${redis_uid}', expected 999 (user redis)"
[ -n "$(ss -Hltn "src 127.0.0.1 and sport = :$STACK_REDIS_PORT")" ] || die "nothing listens on 127.0.0.1:$STACK_REDIS_PORT"
ok "redis-server runs as uid 999 (redis) and listens on 127.0.0.1:$STACK_REDIS_PORT (not the host's 6379)"

phase "seed flow"
compose exec -T starter-api python manage.py createdb
compose exec -T starter-api python manage.py adduser admin admin
# The seed's import, inside the starter-api container from /app (localhost is the host here).
compose exec -T starter-api sh -c 'psql -h localhost -U docker starter < data/starter_pxcodes.sql'
count=$(compose exec -T starter-api psql -Atc 'SELECT count(*) FROM starter_pxcodes')
[ "$count" = 100 ] || die "starter_pxcodes holds $count rows after the import, expected 100"
ok "createdb, adduser admin admin, psql -h localhost -U docker starter < data/starter_pxcodes.sql: 100 codes"
# The seed's `docker run --rm -ti ... starter-api /bin/sh` form: another command replaces the server,
# and the image's PG* defaults plus POSTGRES_PASSWORD from the env file reach the database.
docker run --rm --network host --env-file "$envfile" -e PGHOST=localhost -e PGPORT="$STACK_PG_PORT" \
	starter-api sh -c 'python manage.py loaddata && echo "starter_users: $(psql -Atc "SELECT count(*) FROM starter_users")"' \
	>"$work/run.out" || die "docker run starter-api sh -c '...' failed"
sed 's/^/  /' "$work/run.out" >&2
grep -q '^starter_users: 1$' "$work/run.out" || die "docker run starter-api: expected one user"
ok "docker run starter-api sh -c 'python manage.py loaddata && psql ...': the image's own PG* defaults work"
log "http --auth admin:admin $API/api/v1.0/pxcodes/"
http_get first --auth admin:admin "$API/api/v1.0/pxcodes/"
sed 's/^/  /' "$work/first.head" >&2
etag=$(check_pxcodes first)
ok "GET /api/v1.0/pxcodes/ as admin: 200, total 100, items 039 then 057, ETag $etag"
http_get cached --auth admin:admin "$API/api/v1.0/pxcodes/" "If-None-Match:$etag"
[ "$(status_of cached)" = 304 ] || die "If-None-Match $etag: HTTP $(status_of cached), expected 304"
[ ! -s "$work/cached.body" ] || die "the 304 response has a body"
ok "If-None-Match $etag -> 304 Not Modified"
http_get noauth "$API/api/v1.0/pxcodes/"
[ "$(status_of noauth)" = 401 ] || die "without credentials: HTTP $(status_of noauth), expected 401"
ok "without credentials: 401"

# Rate limiting runs, and its counters are in the stack's redis (not in memory, not in the host's Redis).
[ -n "$(header_of first X-RateLimit-Limit)" ] || die "no X-RateLimit-Limit header: rate limiting is off"
uri=$(docker exec starter-api printenv RATELIMIT_STORAGE_URI) || die "starter-api has no RATELIMIT_STORAGE_URI"
[ "$uri" = "redis://127.0.0.1:$STACK_REDIS_PORT" ] || die "starter-api: RATELIMIT_STORAGE_URI=$uri"
redis_keys() { docker exec redis redis-cli -p "$STACK_REDIS_PORT" --scan --pattern "$1"; }
# A rejected password counts against the address for a minute (RATELIMIT_FAILED_LOGINS): a key that lasts.
http_get badpass --auth admin:wrong-password "$API/api/v1.0/pxcodes/"
[ "$(status_of badpass)" = 401 ] || die "wrong password: HTTP $(status_of badpass), expected 401"
redis_keys 'LIMITS:*failed-login*' >"$work/keys-failed"
[ -s "$work/keys-failed" ] || die "no failed-login counter (LIMITS:*failed-login*) in the stack's redis"
# The per-user and per-address counters live one second (500 and 1000 per second), too short to find with
# --scan afterwards: watch the commands redis receives (MONITOR) during one request instead.
docker exec redis timeout 10 redis-cli -p "$STACK_REDIS_PORT" monitor >"$work/monitor" 2>&1 &
monitor_pid=$!
for _ in $(seq 1 50); do grep -q '^OK' "$work/monitor" && break; sleep 0.1; done
grep -q '^OK' "$work/monitor" || die "redis-cli monitor did not start: $(cat "$work/monitor")"
http_get limited --auth admin:admin "$API/api/v1.0/pxcodes/"
for _ in $(seq 1 50); do grep -q '"LIMITS:[^"]*per-user' "$work/monitor" && break; sleep 0.1; done
kill "$monitor_pid" 2>/dev/null || :
wait "$monitor_pid" 2>/dev/null || :
grep -o '"LIMITS:[^"]*"' "$work/monitor" | tr -d '"' | grep -v failed-login | sort -u >"$work/keys-hits" || :
grep -q per-user "$work/keys-hits" || die "the request's per-user counter never reached the stack's redis"
sed 's/^/  /' "$work/keys-failed" "$work/keys-hits" >&2
ok "X-RateLimit-Limit: $(header_of limited X-RateLimit-Limit); the limits live in the stack's redis ($uri): $(cat "$work/keys-failed" "$work/keys-hits" | wc -l) LIMITS: keys"
[ -s "$STACK_LOG_DIR/starter-api.log" ] || die "starter-api wrote no log file to its LOG_DIR bind mount"
ok "starter-api logs to the host folder: $(wc -l <"$STACK_LOG_DIR/starter-api.log") lines in starter-api.log"

phase "down + up (data survives)"
# The server (python serve.py: granian, master and workers) runs as the image's user, and docker stop's
# SIGTERM reaches it through tini: it drains and exits 0 (137 would mean killed at the end of the grace period).
server_uids=$(docker container top starter-api -eo pid,uid,args | awk '/serve\.py/ {print $2}' | sort -u | tr '\n' ' ')
[ "$server_uids" = "10001 " ] || die "python serve.py runs as uid(s) '${server_uids}', expected 10001 (user app) only"
t0=$SECONDS
compose stop --timeout 20 starter-api
code=$(docker container inspect -f '{{.State.ExitCode}}' starter-api)
[ "$code" = 0 ] || die "starter-api exited $code on docker stop, expected 0 (a graceful shutdown)"
docker logs starter-api 2>&1 | grep -q 'Granian shutdown completed' || die "no graceful shutdown in starter-api's log"
ok "python serve.py runs as uid 10001; docker stop: graceful shutdown, exit 0 after $((SECONDS - t0)) s"
compose down --timeout 20
for c in "${CONTAINERS[@]}"; do
	! docker container inspect "$c" >/dev/null 2>&1 || die "container $c still exists after down"
done
docker volume inspect "$VOLUME" >/dev/null || die "volume $VOLUME did not survive down"
compose up -d
wait_healthy postgres redis starter-api
docker logs postgres >"$work/postgres.log" 2>&1
grep -q 'skipping initialization' "$work/postgres.log" \
	|| die "postgres initialized a new cluster after down/up: the data did not survive"
http_get again --auth admin:admin "$API/api/v1.0/pxcodes/"
etag2=$(check_pxcodes again)
[ "$etag2" = "$etag" ] || die "ETag changed across down/up ($etag -> $etag2)"
ok "after down + up: user admin (made by adduser, not by bootstrap) still logs in; same 100 codes, same ETag"
