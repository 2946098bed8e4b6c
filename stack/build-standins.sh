#!/usr/bin/env bash
# Build local stand-ins for the official base images the project's Dockerfiles use
# (python:3.13-slim, postgres:17, redis:8, nginx:1.28, busybox), for machines that cannot pull from Docker Hub.
# A stand-in is kept between runs and rebuilt only when its files here change (or `docker rmi TAG`).
# Needs a running Docker engine (stack/test-stack.sh starts one); installs debootstrap and busybox-static.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=stack/lib.sh
. "$here/lib.sh"

BASE_TAG=standin/debian:trixie
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base() {
	have_image "$BASE_TAG" && { log "$BASE_TAG exists, kept"; return 0; }
	ensure_packages debootstrap:debootstrap
	local root="$STACK_CACHE/rootfs-trixie"
	rm -rf "$root"
	log "debootstrap --variant=minbase trixie (log: $STACK_LOGS/debootstrap.log)"
	mkdir -p "$STACK_LOGS"
	debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian \
		>"$STACK_LOGS/debootstrap.log" 2>&1 \
		|| { tail -n 20 "$STACK_LOGS/debootstrap.log" >&2; die "debootstrap failed"; }
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
	tar -C "$root" -c . | docker import \
		-c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		-c 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
	rm -rf "$root"
	log "imported $BASE_TAG"
}

# build_standin TAG FOLDER [extra files for the build context...]: build unless an image TAG made from the
# same files exists (the label starter.standin.source holds their checksum, so an edit rebuilds it).
build_standin() {
	local tag="$1" dir="$here/standins/$2" ctx logf want have
	shift 2
	want=$(cat "$dir"/* "$@" | sha256sum | cut -c1-16)
	have=$(docker image inspect -f '{{index .Config.Labels "starter.standin.source"}}' "$tag" 2>/dev/null || :)
	[ "$have" = "$want" ] && { log "$tag exists, kept"; return 0; }
	logf="$STACK_LOGS/standin-${tag//[:\/]/_}.log"
	ctx=$(mktemp -d /tmp/standin-ctx.XXXXXX)
	cp -p "$dir"/* "$@" "$ctx"/
	log "building stand-in $tag (log: $logf)"
	if ! docker build --network host --build-arg "BASE=$BASE_TAG" --label "starter.standin.source=$want" \
		-t "$tag" "$ctx" >"$logf" 2>&1; then
		tail -n 30 "$logf" >&2
		rm -rf "$ctx"
		die "building the stand-in $tag failed"
	fi
	rm -rf "$ctx"
}

main() {
	[ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE"
	mkdir -p "$STACK_LOGS"
	# The busybox stand-in runs Debian's static busybox in an empty image (Debian's plain busybox
	# package is dynamically linked and would not run there).
	if ! have_image busybox:latest && { [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; }; then
		install_packages busybox-static
	fi
	build_base
	build_standin python:3.13-slim python "$CA_BUNDLE"
	build_standin postgres:17 postgres
	build_standin redis:8 redis
	build_standin nginx:1.28 nginx
	build_standin busybox:latest busybox /bin/busybox
}

main "$@"
