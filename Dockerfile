# qbit-consumer: a small image for a NAS. The same `pip install .` and the same entry point
# (`qbit-consumer`) that `make test` exercises.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    QBIT_CONSUMER_STATE_PATH=/data/qbit-consumer.sqlite3

WORKDIR /src
COPY setup.cfg setup.py README.md ./
COPY qbit_consumer ./qbit_consumer
RUN pip install --no-cache-dir . \
    && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin qbit \
    && mkdir -p /data /config \
    && chown qbit /data

USER qbit
WORKDIR /data
# The state file (tracked downloads, unconfirmed events) and the health file live here.
VOLUME ["/data"]

# Fails when the service is not running, a thread is stuck, or RabbitMQ has been unreachable
# for 90 s; a qBittorrent outage alone does not count (the service reports it as events).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["qbit-consumer", "healthcheck", "--config", "/config/config.ini"]

ENTRYPOINT ["qbit-consumer"]
CMD ["run", "--config", "/config/config.ini"]
