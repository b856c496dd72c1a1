#!/usr/bin/env bash
# Makes sure the image the Dockerfile starts FROM is there for ENGINE (docker or podman): already
# there, or pulled. Where nothing can be pulled (a machine without a registry, like the project's
# test machines), it builds a stand-in of the same Debian release with Python 3.11 from Debian's
# own packages and tags it with the name the Dockerfile asks for; the Dockerfile itself is left
# as users pull it. The stand-in's root filesystem is cached outside the work tree and made once.
#
#   scripts/image-base.sh ENGINE
#
# Fails with one line that says what is missing.
set -euo pipefail
engine=${1:?usage: image-base.sh docker|podman}
root=$(cd "$(dirname "$0")/.." && pwd)
base=$(awk 'toupper($1) == "FROM" {print $2; exit}' "$root/Dockerfile")

if "$engine" image inspect "$base" >/dev/null 2>&1; then
    exit 0
fi
if pulled=$("$engine" pull "$base" 2>&1); then
    exit 0
fi
case "$base" in
    python:3.11-slim) suite=bookworm ;;  # Debian 12 with Python 3.11, as that image is
    *) echo "missing: the base image $base (cannot pull it: $(tail -1 <<<"$pulled"))" >&2; exit 1 ;;
esac
echo "note: cannot pull $base here ($(tail -1 <<<"$pulled")); building a stand-in from Debian $suite's packages" >&2

cache=${QBIT_CONSUMER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qbit-consumer}/image-base-$suite
tarball=$cache/rootfs.tar
if [ ! -s "$tarball" ]; then
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
        else
            echo "missing: mmdebstrap, to build a stand-in for $base (sudo apt-get install mmdebstrap)" >&2
            exit 1
        fi
    fi
    mirror=${QBIT_CONSUMER_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || { echo "missing: a Debian mirror in /etc/apt/sources.list.d/debian.sources (for a stand-in of $base)" >&2; exit 1; }
    mkdir -p "$cache"
    if ! mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-pip,ca-certificates \
            "$suite" "$tarball.partial" "$mirror" >"$cache/mmdebstrap.log" 2>&1; then
        echo "missing: Debian $suite from $mirror for a stand-in of $base (log: $cache/mmdebstrap.log)" >&2
        exit 1
    fi
    mv "$tarball.partial" "$tarball"
fi

# The machine's own trust store and pip settings go in too: where pip's traffic passes a proxy
# with a CA of its own, `pip install` inside the build needs them.
context=$cache/context
rm -rf "$context"
mkdir -p "$context"
ln "$tarball" "$context/rootfs.tar" 2>/dev/null || cp "$tarball" "$context/rootfs.tar"
cp /etc/ssl/certs/ca-certificates.crt "$context/ca-certificates.crt"
if [ -r /etc/pip.conf ]; then cp /etc/pip.conf "$context/pip.conf"; else : >"$context/pip.conf"; fi
cat >"$context/Containerfile" <<CONTAINERFILE
FROM scratch
ADD rootfs.tar /
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf
RUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED && ln -sf /usr/bin/python3 /usr/local/bin/python
LABEL org.opencontainers.image.description="A local stand-in for $base: Debian $suite with Python 3.11 from Debian's packages"
CMD ["python3"]
CONTAINERFILE
if ! "$engine" build --network host -t "localhost/$base" -f "$context/Containerfile" "$context" >"$cache/build.log" 2>&1; then
    echo "missing: the stand-in for $base did not build (log: $cache/build.log)" >&2
    exit 1
fi
rm -rf "$context"
