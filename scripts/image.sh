#!/usr/bin/env bash
# `make image`: builds the image from the Dockerfile with the engine this machine has (docker or
# podman), tagged qbit-consumer:<version> and qbit-consumer:latest (or the TAG given), and says
# how large it is and how much of that is this project's own layer.
#
#   scripts/image.sh [TAG]
#
# Fails with one line that says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=$(scripts/container-engine.sh)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' qbit_consumer/__init__.py)
source=$(git config --get remote.origin.url 2>/dev/null || true)
tags=(-t "qbit-consumer:$version" -t qbit-consumer:latest)
[ $# -gt 0 ] && tags=(-t "$1")

scripts/image-base.sh "$engine"
build=("$engine" build --build-arg "VERSION=$version" --build-arg "SOURCE=$source" "${tags[@]}")
# podman's default (OCI) format has no HEALTHCHECK; host networking reaches the machine's own
# package proxy, if any, as the rest of the machine does.
[ "$engine" = podman ] && build+=(--format docker --network host)
if ! "${build[@]}" . >.image-build.log 2>&1; then
    tail -20 .image-build.log >&2
    echo "missing: the image did not build with $engine (log above, whole in .image-build.log)" >&2
    exit 1
fi
rm -f .image-build.log
image=${tags[1]}
size=$("$engine" image inspect --format '{{.Size}}' "$image")
base=$(awk 'toupper($1) == "FROM" {print $2; exit}' Dockerfile)
base_size=$("$engine" image inspect --format '{{.Size}}' "$base")
printf 'built %s with %s: %d MB, of which %d MB are this project'"'"'s layers over %s\n' \
    "$image" "$engine" $((size / 1000000)) $(((size - base_size) / 1000000)) "$base"
