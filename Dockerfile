# A small image: the same `pip install .` and the same entry point that `make test` exercises.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    QBIT_CONSUMER_STATE_PATH=/data/qbit-consumer.sqlite3

WORKDIR /src
COPY setup.cfg setup.py README.md ./
COPY qbit_consumer ./qbit_consumer
RUN pip install --no-cache-dir . && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /data qbit \
    && mkdir -p /data /config && chown qbit /data

USER qbit
VOLUME ["/data"]
WORKDIR /data
ENTRYPOINT ["qbit-consumer"]
CMD ["run", "--config", "/config/config.ini"]
