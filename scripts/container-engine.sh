#!/usr/bin/env bash
# Prints the container engine to build and run the image with: docker when its daemon answers,
# else podman (daemonless). Fails with one line when there is neither.
set -euo pipefail
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
elif command -v podman >/dev/null 2>&1; then
    echo podman
else
    echo "missing: a container engine: Docker with its daemon running, or podman (apt-get install podman)" >&2
    exit 1
fi
