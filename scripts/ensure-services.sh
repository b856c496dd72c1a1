#!/usr/bin/env bash
# Makes sure the real services the tests need are here: qbittorrent-nox (the tests start their
# own instances: Debian bookworm's 4.5.2, and the 5.x builds that scripts/fetch-qbittorrent.sh
# caches from Debian's newer suites), a container engine for the image, and a reachable RabbitMQ. Installs what it can as root with
# apt-get; otherwise fails with one line that says what is missing.
set -euo pipefail

url=${QBIT_CONSUMER_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}
hostport=${url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}; [ "$port" = "$host" ] && port=5672

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=no
apt_install() {
    if [ "$apt_updated" = no ]; then apt-get update -qq; apt_updated=yes; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
reachable() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if ! command -v qbittorrent-nox >/dev/null 2>&1; then
    if can_apt; then
        echo "installing qbittorrent-nox (apt-get)"
        apt_install qbittorrent-nox
    else
        echo "missing: qbittorrent-nox (run as root, or: sudo apt-get install qbittorrent-nox)" >&2
        exit 1
    fi
fi

# Debian's libtorrent bindings make the hybrid (v1+v2) torrents of the re-keying tests.
if ! /usr/bin/python3 -c 'import libtorrent' >/dev/null 2>&1; then
    if can_apt; then
        echo "installing python3-libtorrent (apt-get)"
        apt_install python3-libtorrent
    else
        echo "missing: python3-libtorrent (run as root, or: sudo apt-get install python3-libtorrent)" >&2
        exit 1
    fi
fi

# A container engine: the tests build the image and run it. Debian's podman needs no daemon; runc
# is its runtime here (this kind of sandboxed machine refuses crun's cgroup set-up).
if ! "$(dirname "$0")/container-engine.sh" >/dev/null 2>&1; then
    if can_apt; then
        echo "installing podman and runc (apt-get)"
        apt_install podman runc
    else
        echo "missing: a container engine to build and run the image (sudo apt-get install podman runc, or Docker)" >&2
        exit 1
    fi
fi

# qBittorrent 5.x, from Debian trixie(-backports), cached outside the work tree: the versions the
# tests ask for (QBIT_CONSUMER_TEST_QBITTORRENT, default all), fetched in parallel.
versions=${QBIT_CONSUMER_TEST_QBITTORRENT:-5.3.0,5.1.0,4.5.2}
fetches=()
for version in ${versions//,/ }; do
    case "$version" in
        4.5.2) ;;
        *) "$(dirname "$0")/fetch-qbittorrent.sh" "$version" >/dev/null & fetches+=($!) ;;
    esac
done
for pid in "${fetches[@]}"; do wait "$pid" || exit 1; done

if ! reachable; then
    case "$host" in
        127.0.0.1|localhost) ;;
        *) echo "missing: RabbitMQ at $host:$port is not reachable (QBIT_CONSUMER_TEST_AMQP_URL)" >&2; exit 1 ;;
    esac
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        if can_apt; then
            echo "installing rabbitmq-server (apt-get)"
            apt_install rabbitmq-server
        else
            echo "missing: RabbitMQ on $host:$port (sudo apt-get install rabbitmq-server)" >&2
            exit 1
        fi
    fi
    echo "starting RabbitMQ (rabbitmq-server -detached)"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do
        reachable && break
        sleep 0.5
    done
    if ! reachable; then
        echo "missing: RabbitMQ did not come up on $host:$port within 60 s (see /var/log/rabbitmq)" >&2
        exit 1
    fi
fi
echo "services ready: qBittorrent $versions, RabbitMQ on $host:$port"
