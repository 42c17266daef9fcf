#!/bin/sh
# The main job on the built-in demo image: build busybox offline, inspect it, and round-trip it
# through an archive. Uses its own data root (CARREL_ROOT, default /var/lib/carrel-demo).
set -eu
export CARREL_ROOT="${CARREL_ROOT:-/var/lib/carrel-demo}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step carrel image import-busybox
step carrel images
step carrel info
step carrel image inspect --format '{{.Id}} {{json .RootFS.Layers}}' busybox
step carrel history busybox
step carrel tag busybox demo/busybox:v1
step carrel save -o "$work/busybox.tar" busybox demo/busybox:v1
step carrel rmi demo/busybox:v1
step carrel load -i "$work/busybox.tar"
step carrel images
step carrel system check
