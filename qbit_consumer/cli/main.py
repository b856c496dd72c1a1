"""Command line: ``qbit-consumer run|check --config FILE``.

Exit codes: 0 fine, 1 a service or a check failed, 2 the configuration is unusable.
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from qbit_consumer.broker import Broker
from qbit_consumer.config import Config, load_config
from qbit_consumer.errors import ConfigError, InvalidCommand, QbitConsumerError
from qbit_consumer.logs import setup_logging
from qbit_consumer.qbit.client import QbitClient
from qbit_consumer.qbit.login import LoginGate
from qbit_consumer.redact import config_secrets, redact_url

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


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
        setup_logging(cfg.logging, config_secrets(cfg))
        return recover(cfg)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.command == "check":
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
    setup_logging(cfg.logging, config_secrets(cfg))
    for warning in cfg.warnings:
        logging.getLogger("qbit_consumer").warning(warning)
    from qbit_consumer.service import run_service
    from qbit_consumer.tracking.state import StateError

    try:
        return run_service(cfg)
    except StateError as exc:
        print(f"qbit-consumer: state error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _operate(cfg: Config, args: argparse.Namespace) -> int:
    from qbit_consumer.cli import ops

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


def recover(cfg: Config) -> int:
    """Move a corrupt state file aside (never delete it) and rebuild the tracked set from the
    history stream and qBittorrent, as a start without a state file does."""
    from qbit_consumer.errors import BrokerUnavailable, HistoryUnavailable, StateCorrupt, StateError
    from qbit_consumer.service import Service, absent_or_empty
    from qbit_consumer.tracking.lock import StateLock
    from qbit_consumer.tracking.state import State

    if not cfg.history.enabled:
        print(
            "qbit-consumer: history is disabled ([history] enabled = false): there is nothing "
            "to rebuild the state file from",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    path = cfg.state.path
    try:
        lock = StateLock(path)  # a running service holds it: refuse
        try:
            if not absent_or_empty(path):
                try:
                    State(path).close()
                    print(f"{path} is fine: nothing to recover")
                    return EXIT_OK
                except StateCorrupt:
                    aside = _move_aside(path)
                    print(f"moved the corrupt state file to {aside}")
        finally:
            lock.release()
        service = Service(cfg)
        tracked = service.rebuild_now()
    except (StateError, BrokerUnavailable, HistoryUnavailable) as exc:
        print(f"qbit-consumer: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"rebuilt {path}: {tracked} tracked downloads; start the service with `run`")
    return EXIT_OK


def _move_aside(path: Path) -> Path:
    """``path`` and its SQLite companions renamed with a time stamp; the name it went to."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(aside.with_name(aside.name + suffix))
    return aside


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
