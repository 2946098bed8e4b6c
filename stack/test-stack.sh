#!/usr/bin/env bash
# The stack test: build the Docker Compose stack from the project's own Dockerfiles and compose file,
# bring it up as an operator would (the proxy, `--scale starter-api=3`, migrations once in the one-shot
# migrate service), run the seed's flow through the proxy, show that the data survives `down` + `up`,
# tear it down.
#
#   sudo bash stack/test-stack.sh        (root, Debian; run by .ci/run after the unit tests)
#
# On a machine of this project's kind (Debian bookworm, root, no Docker Hub, host networking only) it
# installs docker.io and starts dockerd if none runs (and stops it again, by PID, at the end), builds local
# stand-ins for python:3.13-slim, postgres:17, redis:8, nginx:1.28 and busybox (kept between runs), lints every
# Dockerfile with hadolint, checks the compose file and the proxy's configuration, and runs the stack with
# docker-compose.hostnet.yml laid over docker-compose.yml: postgres on 127.0.0.1:$STACK_PG_PORT (25432),
# redis on 127.0.0.1:$STACK_REDIS_PORT (26379), the proxy on 127.0.0.1:25000 and three replicas of
# starter-api sharing 127.0.0.1:25001 (proxy/hostnet/). Exits non-zero on the first failure, with the last
# lines of the containers' logs.
# Engine, tool venv and logs: /var/cache/starter-stack, /var/log/starter-stack (see stack/lib.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=stack/lib.sh
. "$here/lib.sh"

# Below the kernel's ephemeral range (32768-60999 here): a port in it can be taken at any moment by
# some process's outgoing connection (it was once, between the port check and postgres binding it).
export STACK_PG_PORT="${STACK_PG_PORT:-25432}" STACK_REDIS_PORT="${STACK_REDIS_PORT:-26379}"
# The proxy's and the replicas' ports are those of proxy/hostnet/listen.conf and upstream-servers.conf.
PROXY_PORT=25000 REPLICA_PORT=25001
API="http://127.0.0.1:$PROXY_PORT"
WAIT_SECS="${STACK_WAIT_SECS:-180}"
REPLICAS=3
# The API image may add this much to its base (issue 11).
IMAGE_BUDGET_MB=80
VOLUME=flask-db-docker_postgres_data

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts dockerd)"

work=$(mktemp -d /tmp/starter-stack-test.XXXXXX)
envfile="$work/stack.env"
secrets="$work/secrets"               # the Compose secrets (POSTGRES_PASSWORD_FILE, SECRET_KEY_FILE)
stack_started=0

passed=0
ok() { passed=$((passed + 1)); log "ok: $*"; }

compose() {
	docker compose --env-file "$envfile" --project-directory "$repo" \
		-f "$repo/docker-compose.yml" -f "$repo/docker-compose.hostnet.yml" "$@"
}

container_logs() {
	local c
	for c in $(docker ps -a --filter label=com.docker.compose.project=flask-db-docker --format '{{.Names}}' | sort); do
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

# logs_have CONTAINER ERE: whether the container's log has a line matching ERE (read whole first: under
# pipefail, `docker logs | grep -q` fails when grep stops reading early and docker logs gets SIGPIPE).
logs_have() { docker logs "$1" >"$work/logs-of-$1" 2>&1; grep -Eq "$2" "$work/logs-of-$1"; }

# The containers of a service, by name (flask-db-docker-starter-api-1, ...).
service_containers() { compose ps -a --format '{{.Name}}' "$1" | sort; }

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
ensure_packages dockerd:docker.io docker:docker.io ss:iproute2 psql:postgresql-client curl:curl
start_engine

phase "tools"
ensure_tools
log "$(docker compose version), $("$STACK_VENV/bin/hadolint" --version)"

phase "base image stand-ins"
bash "$here/build-standins.sh"

phase "lint"
# As `make env` makes them: secrets in files (readable by the containers' users), .env naming them.
mkdir -p "$secrets"
pg_password="stack-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
secret_key="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
printf '%s' "$pg_password" >"$secrets/postgres_password"
printf '%s' "$secret_key" >"$secrets/secret_key"
chmod 0755 "$work" && chmod 0644 "$secrets"/*
printf 'POSTGRES_PASSWORD_FILE=%s\nSECRET_KEY_FILE=%s\n' "$secrets/postgres_password" "$secrets/secret_key" >"$envfile"
mapfile -t dockerfiles < <(cd "$repo" && find . -name Dockerfile -not -path '*/.venv/*' -not -path './.git/*' | sort)
for f in "${dockerfiles[@]}"; do
	(cd "$repo" && "$STACK_VENV/bin/hadolint" --config .hadolint.yaml --no-color "$f") \
		|| die "hadolint: $f"
done
ok "hadolint: ${#dockerfiles[@]} Dockerfiles clean (${dockerfiles[*]})"
docker compose --env-file "$envfile" --project-directory "$repo" -f "$repo/docker-compose.yml" config -q \
	|| die "docker compose config: docker-compose.yml"
compose config -q || die "docker compose config: docker-compose.yml + docker-compose.hostnet.yml"
env -u POSTGRES_PASSWORD_FILE docker compose --project-directory "$repo" -f "$repo/docker-compose.yml" config -q \
	>/dev/null 2>&1 && die "docker compose config passed without POSTGRES_PASSWORD_FILE (it must be required)"
ok "docker compose config: docker-compose.yml and the host-network override are valid; the secrets are required"
# Replicas sharing the host's network cannot each bind the image's metrics port (9100).
compose config --format json | python3 -c 'import json, sys
env = json.load(sys.stdin)["services"]["starter-api"].get("environment") or {}
sys.exit(0 if env.get("METRICS_PORT") == "" else 1)' \
	|| die "docker compose config: the host-network override must turn the replicas' METRICS_PORT off"
# The proxy's configuration as the stack runs it here (nginx -t in the nginx:1.28 stand-in).
docker run --rm --network none -v "$repo/proxy/nginx.conf:/etc/nginx/nginx.conf:ro" \
	-v "$repo/proxy/hostnet/upstream-servers.conf:/etc/nginx/upstream-servers.conf:ro" \
	-v "$repo/proxy/hostnet/listen.conf:/etc/nginx/listen.conf:ro" \
	nginx:1.28 nginx -t -p /tmp/ -c /etc/nginx/nginx.conf -e stderr >"$work/nginx-t.log" 2>&1 \
	|| { cat "$work/nginx-t.log" >&2; die "nginx -t: proxy/nginx.conf with proxy/hostnet/"; }
ok "nginx -t: proxy/nginx.conf with proxy/hostnet/ ($(docker run --rm nginx:1.28 nginx -v 2>&1 | tail -n 1))"

phase "build project images"
compose build >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; die "docker compose build"; }
cp "$work/build.log" "$STACK_LOGS/compose-build.log"
ok "built db/postgres_datastore, db/postgres, starter-api (log: $STACK_LOGS/compose-build.log); redis:8 and nginx:1.28 as they are"
image=$(docker image inspect -f '{{.Size}}' starter-api) base=$(docker image inspect -f '{{.Size}}' python:3.13-slim)
added_mb=$(( (image - base) / 1000000 ))
log "image starter-api: $((image / 1000000)) MB, $added_mb MB over python:3.13-slim ($((base / 1000000)) MB)"
[ "$added_mb" -le "$IMAGE_BUDGET_MB" ] || die "the API image adds $added_mb MB to python:3.13-slim (budget: $IMAGE_BUDGET_MB MB)"
# No tests, dev requirements or psql in the image, and no pip in its venv (the base's own stays).
docker run --rm --network none starter-api sh -c \
	'test ! -e tests && test ! -e requirements-dev.txt && test ! -e /opt/venv/bin/pip && ! command -v psql' \
	>/dev/null || die "the API image holds tests/, requirements-dev.txt, a pip in /opt/venv or psql"
ok "image starter-api adds $added_mb MB to python:3.13-slim (at most $IMAGE_BUDGET_MB); no tests, dev requirements, psql, nor pip in its venv"

phase "up"
port_free "$STACK_PG_PORT" || die "port $STACK_PG_PORT is taken (set STACK_PG_PORT)"
port_free "$PROXY_PORT" || die "port $PROXY_PORT (proxy/hostnet/listen.conf) is taken"
port_free "$REPLICA_PORT" || die "port $REPLICA_PORT (proxy/hostnet/upstream-servers.conf) is taken"
port_free "$STACK_REDIS_PORT" || die "port $STACK_REDIS_PORT is taken (set STACK_REDIS_PORT)"
compose down -v --remove-orphans >/dev/null 2>&1 || :   # leftovers of an interrupted run
stack_started=1
# As an operator scales out: no container name or host port stands in the way of --scale.
compose up -d --scale starter-api=$REPLICAS
mapfile -t replicas < <(service_containers starter-api)
[ "${#replicas[@]}" = "$REPLICAS" ] || die "expected $REPLICAS starter-api containers, found: ${replicas[*]}"
proxy=$(service_containers proxy) migrate=$(service_containers migrate)
wait_healthy postgres redis "${replicas[@]}" "$proxy"
docker container inspect postgres_data >/dev/null || die "the data-only container postgres_data does not exist"
if [[ "$(docker network ls --format '{{.Name}}')" == *flask-db-docker* ]]; then
	die "a flask-db-docker network was created; the override must keep every service on the host network"
fi
ok "postgres, redis, $REPLICAS replicas (${replicas[*]}) and $proxy healthy; postgres_data exists ($(docker container inspect -f '{{.State.Status}}' postgres_data))"
# Migrations ran once, in migrate, before any replica started (service_completed_successfully).
[ "$(docker container inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$migrate")" = "exited 0" ] \
	|| die "$migrate did not exit 0"
logs_have "$migrate" 'Database ready' || die "$migrate did not prepare the database"
migrate_done=$(docker container inspect -f '{{.State.FinishedAt}}' "$migrate")
for c in "${replicas[@]}"; do
	! logs_have "$c" 'Database ready|Running upgrade' || die "$c ran migrations itself"
	started=$(docker container inspect -f '{{.State.StartedAt}}' "$c")
	[[ "$started" > "$migrate_done" ]] || die "$c started ($started) before $migrate finished ($migrate_done)"
done
ok "migrations once: $migrate exited 0 ('$(docker logs "$migrate" 2>&1 | tail -n 1)'), every replica started after it and ran none"
# Every replica listens on the one port (SO_REUSEPORT): one granian per replica at least.
listeners=$(ss -Hltnp "src 127.0.0.1 and sport = :$REPLICA_PORT" | grep -o 'pid=[0-9]*' | sort -u | wc -l)
[ "$listeners" -ge "$REPLICAS" ] || die "$listeners processes listen on 127.0.0.1:$REPLICA_PORT, expected at least $REPLICAS"
ok "$listeners server processes of $REPLICAS replicas share 127.0.0.1:$REPLICA_PORT (SO_REUSEPORT); the proxy is the only way in ($API)"
# How a careful operator runs them: read-only, no capabilities, no privilege gain, limits, rotated logs,
# no secret in the configuration docker inspect shows.
for c in "${replicas[0]}" "$migrate" "$proxy"; do
	conf=$(docker container inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config "max-size"}}' "$c")
	[[ "$conf" =~ ^true\ \[ALL\]\ \[no-new-privileges:true\]\ [1-9][0-9]*\ [1-9][0-9]*\ json-file\ [0-9]+m$ ]] \
		|| die "$c: read-only/cap_drop/no-new-privileges/limits/log rotation not as expected: $conf"
	docker container inspect "$c" >"$work/inspect-$c.json"
	! grep -qF -e "$pg_password" -e "$secret_key" "$work/inspect-$c.json" || die "$c: a secret shows in docker inspect"
done
ok "replicas, migrate and proxy: read-only root, cap_drop ALL, no-new-privileges, CPU and memory limits, json-file logs rotated; no secret in docker inspect"
# redis: the stand-in (like the official image) drops from root to the user redis (uid 999).
redis_uid=$(docker container top redis -eo pid,uid,args | awk '/redis-server/ {print $2; exit}')
[ "$redis_uid" = 999 ] || die "redis-server runs as uid '${redis_uid}', expected 999 (user redis)"
[ -n "$(ss -Hltn "src 127.0.0.1 and sport = :$STACK_REDIS_PORT")" ] || die "nothing listens on 127.0.0.1:$STACK_REDIS_PORT"
ok "redis-server runs as uid 999 (redis) and listens on 127.0.0.1:$STACK_REDIS_PORT (not the host's 6379)"

phase "seed flow"
# `docker compose exec` skips the entrypoint: the secrets are read by manage.py itself (secret_files.py).
compose exec -T starter-api python manage.py createdb
compose exec -T starter-api python manage.py adduser admin admin
# The seed's import with psql from the host, to the published postgres (the API image has no psql).
PGPASSWORD="$pg_password" PGPORT="$STACK_PG_PORT" psql -h localhost -U docker starter < "$repo/data/starter_pxcodes.sql"
# ... and psql in the postgres container, which has it.
count=$(compose exec -T postgres psql -U docker starter -Atc 'SELECT count(*) FROM starter_pxcodes')
[ "$count" = 100 ] || die "starter_pxcodes holds $count rows after the import, expected 100"
ok "createdb, adduser admin admin (compose exec starter-api), psql -h localhost -U docker starter < data/starter_pxcodes.sql: 100 codes"
# The seed's `docker run --rm -ti ... starter-api /bin/sh` form: another command replaces the server,
# and the image's PG* defaults plus the secrets mounted at /run/secrets reach the database.
docker run --rm --network host -v "$secrets:/run/secrets:ro" -e PGHOST=localhost -e PGPORT="$STACK_PG_PORT" \
	starter-api sh -c 'python manage.py loaddata' >"$work/run.out" || die "docker run starter-api sh -c 'python manage.py loaddata' failed"
sed 's/^/  /' "$work/run.out" >&2
grep -q 'in starter_pxcodes' "$work/run.out" || die "docker run starter-api: loaddata said nothing"
ok "docker run -v secrets:/run/secrets starter-api sh -c 'python manage.py loaddata': the image's own PG* defaults and /run/secrets work"
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
uri=$(docker exec "${replicas[0]}" printenv RATELIMIT_STORAGE_URI) || die "${replicas[0]} has no RATELIMIT_STORAGE_URI"
[ "$uri" = "redis://127.0.0.1:$STACK_REDIS_PORT" ] || die "${replicas[0]}: RATELIMIT_STORAGE_URI=$uri"
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

# The proxy: the client's address reaches the app through X-Forwarded-For (FORWARDED_PROXIES=1), and a
# client cannot forge it. From 127.0.0.5 (another loopback address) a failed login is counted for
# 127.0.0.5, not for the proxy's 127.0.0.1; one that sends its own X-Forwarded-For still counts as itself.
curl -s -o /dev/null --interface 127.0.0.5 -u admin:wrong "$API/api/v1.0/pxcodes/"
curl -s -o /dev/null --interface 127.0.0.6 -u admin:wrong -H 'X-Forwarded-For: 203.0.113.9' "$API/api/v1.0/pxcodes/"
redis_keys 'LIMITS:*failed-login*' >"$work/keys-forwarded"
grep -q '/127\.0\.0\.5/' "$work/keys-forwarded" || die "the client address 127.0.0.5 did not reach the app: $(cat "$work/keys-forwarded")"
grep -q '/127\.0\.0\.6/' "$work/keys-forwarded" && ! grep -q 203.0.113.9 "$work/keys-forwarded" \
	|| die "a client's own X-Forwarded-For was trusted: $(cat "$work/keys-forwarded")"
ok "X-Forwarded-For: the app counts the client's address (127.0.0.5), not the proxy's; a forged header is not trusted"
# Bodies are limited before a replica sees them, in the API's JSON error shape.
head -c 70000 /dev/zero | tr '\0' x >"$work/big.json"
curl -s -o "$work/big.out" -w '%{http_code}' -u admin:admin -H 'Content-Type: application/json' \
	--data-binary @"$work/big.json" "$API/api/v1.0/pxcodes/" >"$work/big.status"
[ "$(cat "$work/big.status")" = 413 ] && python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["status"] == 413' "$work/big.out" \
	|| die "a 70 kB body: HTTP $(cat "$work/big.status") $(head -c 200 "$work/big.out"), expected the proxy's JSON 413"
ok "a 70 kB body: 413 from the proxy, as JSON ($(cat "$work/big.out"))"
# Logs: docker logs (json-file, rotated by Docker), from every replica.
for c in "${replicas[@]}"; do
	logs_have "$c" 'starter-api ready' || die "$c logged no 'starter-api ready' to docker logs"
done
ok "every replica logs to docker logs ('starter-api ready' in ${#replicas[@]} of them)"
# A log file where asked (LOG_FILE): one process writes it for all, whole lines, and docker logs still
# gets everything. Four writers at once, 2,000 lines each, on the read-only root filesystem.
mkdir -p "$work/logs" && chmod 0777 "$work/logs"
docker run --rm --network none --read-only --cap-drop ALL -v "$work/logs:/logs" -e LOG_FILE=/logs/starter-api.log \
	starter-api sh -c 'for i in 1 2 3 4; do (seq 1 2000 | sed -u "s/^/writer $i line /") & done; wait' >"$work/tee.out" \
	|| die "docker run -e LOG_FILE=... starter-api failed"
[ "$(wc -l <"$work/logs/starter-api.log")" = 8000 ] && [ "$(wc -l <"$work/tee.out")" = 8000 ] \
	&& ! grep -qvE '^writer [1-4] line [0-9]+$' "$work/logs/starter-api.log" \
	|| die "LOG_FILE: $(wc -l <"$work/logs/starter-api.log") lines in the file, $(wc -l <"$work/tee.out") on stdout, expected 8000 whole lines in each"
ok "LOG_FILE: 4 processes x 2,000 lines, all whole, in the file and on docker logs alike (one writer: logtee.py)"

phase "down + up (data survives)"
# The server (python serve.py: granian, master and workers) runs as the image's user, and docker stop's
# SIGTERM reaches it through tini: it drains and exits 0 (137 would mean killed at the end of the grace period).
server_uids=$(docker container top "${replicas[0]}" -eo pid,uid,args | awk '/serve\.py/ {print $2}' | sort -u | tr '\n' ' ')
[ "$server_uids" = "10001 " ] || die "python serve.py runs as uid(s) '${server_uids}', expected 10001 (user app) only"
t0=$SECONDS
compose stop --timeout 20 starter-api
for c in "${replicas[@]}"; do
	code=$(docker container inspect -f '{{.State.ExitCode}}' "$c")
	[ "$code" = 0 ] || die "$c exited $code on docker stop, expected 0 (a graceful shutdown)"
	logs_have "$c" 'Granian shutdown completed' || die "no graceful shutdown in $c's log"
done
ok "python serve.py runs as uid 10001; docker stop: $REPLICAS replicas shut down gracefully, exit 0 after $((SECONDS - t0)) s"
compose down --timeout 20
left=$(docker ps -aq --filter label=com.docker.compose.project=flask-db-docker)
[ -z "$left" ] || die "containers still exist after down: $left"
docker volume inspect "$VOLUME" >/dev/null || die "volume $VOLUME did not survive down"
compose up -d --scale starter-api=$REPLICAS
mapfile -t replicas < <(service_containers starter-api)
wait_healthy postgres redis "${replicas[@]}" "$(service_containers proxy)"
docker logs postgres >"$work/postgres.log" 2>&1
grep -q 'skipping initialization' "$work/postgres.log" \
	|| die "postgres initialized a new cluster after down/up: the data did not survive"
http_get again --auth admin:admin "$API/api/v1.0/pxcodes/"
etag2=$(check_pxcodes again)
[ "$etag2" = "$etag" ] || die "ETag changed across down/up ($etag -> $etag2)"
ok "after down + up: user admin (made by adduser, not by bootstrap) still logs in; same 100 codes, same ETag"
