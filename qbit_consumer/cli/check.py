"""``qbit-consumer check``: the config read, and each service reached once."""

from __future__ import annotations

from qbit_consumer.broker import Broker
from qbit_consumer.cli.exits import EXIT_FAILURE, EXIT_OK
from qbit_consumer.config import Config
from qbit_consumer.errors import QbitConsumerError
from qbit_consumer.qbit.client import QbitClient
from qbit_consumer.qbit.login import LoginGate
from qbit_consumer.redact import redact_url


def check(cfg: Config) -> int:
    """Reach both services once; print one line each; 0 when both answered."""
    ok = True
    broker = Broker(cfg.rabbitmq.url, role="check")
    try:
        broker.connect()
        print(f"RabbitMQ    ok      {redact_url(cfg.rabbitmq.url)}")
    except QbitConsumerError as exc:
        print(f"RabbitMQ    FAILED  {exc}")
        ok = False
    finally:
        broker.close()
    qbit = QbitClient(cfg.qbittorrent, LoginGate())
    try:
        app, api = qbit.version()
        auth = "API key" if cfg.qbittorrent.api_key else f"user {cfg.qbittorrent.username!r}"
        print(
            f"qBittorrent ok      {redact_url(cfg.qbittorrent.url)} ({app}, Web API {api}, {auth})"
        )
    except QbitConsumerError as exc:
        print(f"qBittorrent FAILED  {exc}")
        ok = False
    finally:
        qbit.close()
    print(f"config      ok      {cfg.source} ({len(cfg.categories)} categories)")
    return EXIT_OK if ok else EXIT_FAILURE
