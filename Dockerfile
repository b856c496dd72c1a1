# qbit-consumer: a small image for a NAS. The same `pip install .` and the same entry point
# (`qbit-consumer`) that `make test` exercises; `make image` builds it with docker or podman, and
# the test suite builds and runs it (docs/operations.md, "Running it on a NAS").
FROM python:3.11-slim

# `make image` passes both; a plain `docker build .` keeps these defaults.
ARG VERSION=0.1.0
ARG SOURCE=""
LABEL org.opencontainers.image.title="qbit-consumer" \
      org.opencontainers.image.description="An event bridge between qBittorrent and RabbitMQ: commands in, download lifecycle events out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}"

# No bytecode written at run time: the root filesystem may be read-only (`--read-only`); pip
# compiled it when it installed the package.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    QBIT_CONSUMER_STATE_PATH=/data/qbit-consumer.sqlite3

COPY setup.cfg setup.py README.md /src/
COPY qbit_consumer /src/qbit_consumer
# One layer: the package and its dependencies, nothing of the build left behind. /data is the
# only place written to; it is open to any uid (sticky, like /tmp) so that a container run with
# `--user 1000:1000` can use a new named volume, which starts as a copy of this folder. A host
# folder mounted there keeps its own owner and mode.
RUN pip install --no-cache-dir /src \
    && rm -rf /src \
    && groupadd --system --gid 10001 qbit \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin qbit \
    && mkdir -p /data /config \
    && chown qbit:qbit /data \
    && chmod 1777 /data

# Not root. Any other uid works as well (`--user`, compose `user:`), given a writable /data.
USER 10001:10001
WORKDIR /data
# The state file (tracked downloads, unconfirmed events), its lock and the health file.
VOLUME ["/data"]

# Fails when the service is not running, a thread is stuck, the state file cannot be written,
# qBittorrent refuses our login, or RabbitMQ has been unreachable for longer than
# [service] unhealthy_after_seconds (90 s); a qBittorrent outage alone does not count (the
# service reports it as events). Imports only what it needs: 0.15 s and 21 MiB a probe
# (docs/benchmarks-container.md).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["qbit-consumer", "healthcheck", "--config", "/config/config.ini"]

# SIGTERM (docker stop, podman stop): the command in hand finishes, exit 0 within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["qbit-consumer"]
CMD ["run", "--config", "/config/config.ini"]
