"""Command line: ``qbit-consumer run|check --config FILE``.

Exit codes: 0 fine, 1 a service or a check failed, 2 the configuration is unusable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qbit_consumer.broker import Broker, redact_url
from qbit_consumer.config import Config, load_config
from qbit_consumer.errors import ConfigError, QbitConsumerError
from qbit_consumer.logs import setup_logging
from qbit_consumer.qbit import LoginGate, QbitClient

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbit-consumer",
        description="Bridge between qBittorrent and RabbitMQ: downloads.add commands in, "
        "download lifecycle events out.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the service until SIGTERM/SIGINT"),
        ("check", "validate the config and reach RabbitMQ and qBittorrent"),
        ("healthcheck", "exit 0 while the running service is alive (Docker HEALTHCHECK)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", default="config.ini", help="INI file (default: config.ini)")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"qbit-consumer: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        for warning in cfg.warnings:
            print(f"warning: {warning}")
        return check(cfg)
    if args.command == "healthcheck":
        return healthcheck(cfg)
    setup_logging(cfg.logging)
    for warning in cfg.warnings:
        logging.getLogger("qbit_consumer").warning(warning)
    from qbit_consumer.service import run_service
    from qbit_consumer.state import StateError

    try:
        return run_service(cfg)
    except StateError as exc:
        print(f"qbit-consumer: state error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


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
        print(f"qBittorrent ok      {cfg.qbittorrent.url} ({app}, Web API {api})")
    except QbitConsumerError as exc:
        print(f"qBittorrent FAILED  {exc}")
        ok = False
    finally:
        qbit.close()
    print(f"config      ok      {cfg.source} ({len(cfg.categories)} categories)")
    return EXIT_OK if ok else EXIT_FAILURE


def healthcheck(cfg: Config) -> int:
    from qbit_consumer.health import check_health

    problems = check_health(cfg)
    for problem in problems:
        print(f"unhealthy: {problem}")
    if not problems:
        print("healthy")
    return EXIT_FAILURE if problems else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
