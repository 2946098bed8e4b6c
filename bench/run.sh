#!/usr/bin/env bash
# usage: bench/run.sh [bench.py options]     e.g.  bench/run.sh --sizes 100,78638
#        bench/run.sh --issue12 [deployed.py options]   the service as deployed (issue 12), e.g. --quick
# Installs what the benchmark needs when missing (Debian: wrk, curl, psql; the peers' nginx and
# htpasswd), then runs bench/bench.py or bench/deployed.py. See bench/README.md.
# Results: /tmp/starter-bench/results-*.txt, issue12-*.txt
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v nginx >/dev/null || missing+=(nginx)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/run.sh: installing ${missing[*]}" >&2
    apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2
fi
if [ "${1:-}" = --issue12 ]; then
    shift
    exec python3 "$here/deployed.py" "$@"
fi
exec python3 "$here/bench.py" "$@"
