"""Command line: parses the arguments and hands each command to the module that carries it out.

Exit codes: 0 fine, 1 a service or a check failed, 2 the configuration is unusable.

Imports are lazy on purpose: ``healthcheck`` runs every 30 s inside the container (Docker's
HEALTHCHECK), so it must cost a NAS little; it needs the config and the health report, not
pika, requests or qbittorrent-api, which only the commands that talk to a service import.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from qbit_consumer.cli.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from qbit_consumer.config import Config, load_config
from qbit_consumer.errors import ConfigError, InvalidCommand, QbitConsumerError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qbit-consumer",
        description="Bridge between qBittorrent and RabbitMQ: downloads.add commands in, "
        "download lifecycle events out.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        cmd = parent.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", default="config.ini", help="INI file (default: config.ini)")
        return cmd

    command("run", "run the service until SIGTERM/SIGINT")
    command("check", "validate the config and reach RabbitMQ and qBittorrent")
    command("recover", "move a corrupt state file aside and rebuild it from history")
    command("healthcheck", "exit 0 while the running service is alive (Docker HEALTHCHECK)")
    status = command(
        "status",
        "print the service's latest downloads.status message and its age; exit 1 when it is "
        "older than three status intervals (or there is none)",
    )
    status.add_argument("--json", action="store_true", help="the message's body, unchanged")
    send = command(
        "send",
        "publish a command, checked first: MAGNET --category C or --torrent FILE --category C "
        "(an add), or remove|pause|resume HASH",
    )
    send.add_argument("what", nargs="*", metavar="MAGNET | remove HASH | pause HASH | resume HASH")
    send.add_argument("--torrent", metavar="FILE", help="add this .torrent file (no MAGNET)")
    send.add_argument("--category", help="the add's category (one of [categories])")
    send.add_argument("--request-id")
    send.add_argument(
        "--tag", action="append", default=[], help="extra qBittorrent tag (repeatable)"
    )
    send.add_argument(
        "--delete-files", action="store_true", help="remove: also delete the downloaded data"
    )
    watch = command("watch", "print events as they arrive, one line each, until Ctrl-C")
    watch.add_argument(
        "--events",
        nargs="*",
        default=["#"],
        metavar="KEY",
        help="binding keys, e.g. downloads.completed (default: all)",
    )
    history = command("history", "the audit trail: events kept in the history stream")
    download = history.add_mutually_exclusive_group()
    download.add_argument("--hash", help="one download's timeline, by any of its info-hashes")
    download.add_argument("--request-id", help="one download's timeline, by its request id")
    history.add_argument("--since", help="from this long ago (7d, 12h, 30m) or this date")
    history.add_argument("--until", help="up to this long ago or this date")
    shape = history.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the event bodies, one per line")
    shape.add_argument("--summary", action="store_true", help="counts, failures, durations")
    dlq = sub.add_parser("dlq", help="read or replay the dead-letter queue")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    command("list", "show the dead-lettered commands and why (they stay in the queue)", dlq_sub)
    replay = command("replay", "move dead-lettered commands back to the command queue", dlq_sub)
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every message in the DLQ")
    which.add_argument(
        "numbers",
        nargs="*",
        type=int,
        default=[],
        metavar="N",
        help="message numbers as shown by `dlq list`",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"qbit-consumer: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "run":
        return _run(cfg)
    if args.command == "healthcheck":
        return healthcheck(cfg)
    if args.command == "recover":
        from qbit_consumer.cli.recover import recover

        _setup_logging(cfg)
        return recover(cfg)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.command == "check":
        from qbit_consumer.cli.check import check

        return check(cfg)
    try:
        return _operate(cfg, args)
    except KeyboardInterrupt:
        return EXIT_OK
    except InvalidCommand as exc:
        print(f"qbit-consumer: not sent, the service would dead-letter it: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (QbitConsumerError, RuntimeError) as exc:
        print(f"qbit-consumer: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _run(cfg: Config) -> int:
    import logging

    from qbit_consumer.errors import StateError
    from qbit_consumer.service import run_service

    _setup_logging(cfg)
    for warning in cfg.warnings:
        logging.getLogger("qbit_consumer").warning(warning)

    try:
        return run_service(cfg)
    except StateError as exc:
        print(f"qbit-consumer: state error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _operate(cfg: Config, args: argparse.Namespace) -> int:
    from qbit_consumer.cli import ops

    if args.command == "status":
        from qbit_consumer.cli.status import status

        return status(cfg, as_json=args.json)
    if args.command == "send":
        try:
            routing_key, body = _command_of(args)
        except ValueError as exc:
            print(f"qbit-consumer: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        message_id = ops.send(cfg, routing_key, body)
        print(f"sent {routing_key} (message_id {message_id})")
    elif args.command == "watch":
        ops.watch(cfg, args.events)
    elif args.command == "history":
        return _history(cfg, args)
    elif args.dlq_command == "list":
        ops.dlq_list(cfg)
    else:
        moved = ops.dlq_replay(cfg, None if args.all else set(args.numbers))
        print(f"{moved} command(s) moved back to {cfg.rabbitmq.command_queue}")
    return EXIT_OK


_CONTROL: Final = ("remove", "pause", "resume")


def _command_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The routing key and body ``send`` publishes.

    :raises ValueError: the arguments do not make a command (one line for the user).
    """
    what = args.what
    body: dict[str, Any] = {"request_id": args.request_id} if args.request_id else {}
    if args.torrent:
        if what or args.delete_files or not args.category:
            raise ValueError("send --torrent FILE needs --category, and takes no MAGNET or HASH")
        try:
            data = Path(args.torrent).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {args.torrent}: {exc.strerror}") from None
        body.update(torrent=base64.b64encode(data).decode(), category=args.category)
        if args.tag:
            body["tags"] = args.tag
        return "downloads.add", body
    if not what:
        raise ValueError("send needs a MAGNET, --torrent FILE, or remove|pause|resume HASH")
    if what[0] in _CONTROL:
        if len(what) != 2 or args.category or args.tag:
            raise ValueError(f"send {what[0]} takes one HASH, and no --category or --tag")
        if args.delete_files and what[0] != "remove":
            raise ValueError("--delete-files goes with send remove only")
        body["hash"] = what[1]
        if args.delete_files:
            body["delete_files"] = True
        return f"downloads.{what[0]}", body
    if len(what) != 1 or args.delete_files or not args.category:
        raise ValueError("send MAGNET needs --category, and takes one magnet")
    body.update({"magnet": what[0], "category": args.category})
    if args.tag:
        body["tags"] = args.tag
    return "downloads.add", body


def _history(cfg: Config, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from qbit_consumer.cli.history import history
    from qbit_consumer.contract.magnet import info_hash_keys
    from qbit_consumer.history.trail import parse_when

    if not cfg.history.enabled:
        print(
            "qbit-consumer: history is disabled in the config ([history] enabled = false): "
            "nothing is kept",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    now = datetime.now(UTC)
    try:
        since = parse_when(args.since, now) if args.since else None
        until = parse_when(args.until, now) if args.until else None
        hashes = frozenset(info_hash_keys(args.hash)) if args.hash else None
    except ValueError as exc:
        print(f"qbit-consumer: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    history(
        cfg,
        since=since,
        until=until,
        hashes=hashes,
        request_id=args.request_id,
        as_json=args.json,
        summary=args.summary,
    )
    return EXIT_OK


def healthcheck(cfg: Config) -> int:
    """One line, always: Docker and podman keep the probe's output in the container's health
    log, where one sentence that says why is what a person needs."""
    from qbit_consumer.health import check_health

    problems = check_health(cfg)
    print(f"unhealthy: {'; '.join(problems)}" if problems else "healthy")
    return EXIT_FAILURE if problems else EXIT_OK


def _setup_logging(cfg: Config) -> None:
    from qbit_consumer.logs import setup_logging
    from qbit_consumer.redact import config_secrets

    setup_logging(cfg.logging, config_secrets(cfg))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
