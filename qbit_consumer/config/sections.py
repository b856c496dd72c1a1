"""The configuration's sections as frozen attrs classes, with the defaults of CONTRACT section 2
and the rule each value must follow: parsed once at start (``loading``), then trusted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from qbit_consumer.contract.structure import validator

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _amqp_name(value: str) -> str | None:
    return None if _NAME_RE.match(value) else "must be 1-200 characters of letters, digits, _ . : -"


def _optional_amqp_name(value: str) -> str | None:
    return None if value == "" else _amqp_name(value)


def _url(schemes: tuple[str, ...]) -> Any:
    def check(value: str) -> str | None:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            return f"is not a valid URL ({exc})"
        if parts.scheme not in schemes:
            return f"must start with {' or '.join(s + '://' for s in schemes)}"
        if not parts.hostname:
            return "has no host name"
        return None

    return validator(check)


def _at_least(minimum: float) -> Any:
    return validator(lambda v: None if v >= minimum else f"must be at least {minimum:g}")


def _at_most(maximum: float) -> Any:
    return validator(lambda v: None if v <= maximum else f"must be at most {maximum:g}")


def _one_of(*choices: str) -> Any:
    return validator(lambda v: None if v in choices else f"must be one of {', '.join(choices)}")


#: A day: the longest wait a duration key may ask for (longer ones are mistakes, and ``sleep``
#: overflows on the absurd ones).
_DAY: Final = 86_400.0


def _status_interval(value: float) -> str | None:
    if value == 0 or 1 <= value <= _DAY:
        return None
    return f"must be 0 (off) or between 1 and {_DAY:g} seconds"


@attrs.frozen(kw_only=True)
class ServiceConfig:
    """The running process itself: its name on the platform, and how it says how it is."""

    #: This instance's name: ``instance`` of the status message (and, later, of every event).
    name: str = attrs.field(default="qbit-consumer", validator=validator(_amqp_name))
    #: Seconds between two ``downloads.status`` messages; 0 publishes none.
    status_interval_seconds: float = attrs.field(
        default=60.0, validator=validator(_status_interval)
    )
    #: How long RabbitMQ may be unreachable before ``healthcheck`` says unhealthy.
    unhealthy_after_seconds: float = attrs.field(
        default=90.0, validator=[_at_least(1), _at_most(_DAY)]
    )


@attrs.frozen(kw_only=True)
class RabbitmqConfig:
    url: str = attrs.field(
        default="amqp://guest:guest@localhost:5672/%2F", validator=_url(("amqp", "amqps"))
    )
    command_exchange: str = attrs.field(default="downloads", validator=validator(_amqp_name))
    command_queue: str = attrs.field(default="downloads.commands", validator=validator(_amqp_name))
    queue_type: str = attrs.field(default="quorum", validator=_one_of("quorum", "classic"))
    event_exchange: str = attrs.field(default="downloads.events", validator=validator(_amqp_name))
    #: The last-value queue that keeps the newest ``downloads.status`` message.
    status_queue: str = attrs.field(default="downloads.status", validator=validator(_amqp_name))
    platform_exchange: str = attrs.field(default="", validator=validator(_optional_amqp_name))
    platform_routing_keys: tuple[str, ...] = attrs.field(
        default=("#",),
        validator=validator(lambda v: None if v else "needs at least one binding key"),
    )
    prefetch_count: int = attrs.field(default=10, validator=_at_least(1))
    max_attempts: int = attrs.field(default=5, validator=_at_least(1))
    retry_delay_seconds: float = attrs.field(default=30.0, validator=_at_least(0.001))

    @property
    def retry_queue(self) -> str:
        return f"{self.command_queue}.retry"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.command_queue}.dlq"


@attrs.frozen(kw_only=True)
class QbittorrentConfig:
    url: str = attrs.field(default="http://localhost:8080", validator=_url(("http", "https")))
    username: str = "admin"
    password: str = attrs.field(default="", repr=False)
    api_key: str = attrs.field(default="", repr=False)
    verify_tls: bool = True
    timeout_seconds: float = attrs.field(default=10.0, validator=_at_least(0.1))


@attrs.frozen(kw_only=True)
class PollingConfig:
    interval_seconds: float = attrs.field(default=5.0, validator=_at_least(0.1))
    failure_alert_threshold: int = attrs.field(default=3, validator=_at_least(1))
    stalled_after_seconds: float = attrs.field(default=1800.0, validator=_at_least(1))


@attrs.frozen(kw_only=True)
class CommandsConfig:
    #: May remove/pause/resume torrents this service did not add (without its tag).
    control_unmanaged: bool = False
    #: The largest .torrent file a ``downloads.add`` may carry.
    max_torrent_bytes: int = attrs.field(default=4_194_304, validator=_at_least(1))


#: RabbitMQ's ``x-max-age`` syntax: a whole number and one unit (years, months, days, hours,
#: minutes, seconds).
_MAX_AGE_RE = re.compile(r"^[1-9][0-9]*[YMDhms]$")


@attrs.frozen(kw_only=True)
class HistoryConfig:
    """The audit trail: a RabbitMQ stream bound to the event exchange (CONTRACT section 8)."""

    enabled: bool = True
    stream: str = attrs.field(default="downloads.history", validator=validator(_amqp_name))
    max_age: str = attrs.field(
        default="90D",
        validator=validator(
            lambda v: (
                None
                if _MAX_AGE_RE.match(v)
                else "must be a whole number and one of the units Y M D h m s, like 90D or 12h"
            )
        ),
    )
    max_bytes: int = attrs.field(default=1_000_000_000, validator=_at_least(1))


@attrs.frozen(kw_only=True)
class StateConfig:
    path: Path = Path("./state/qbit-consumer.sqlite3")


@attrs.frozen(kw_only=True)
class LoggingConfig:
    level: str = attrs.field(
        default="INFO",
        converter=str.upper,
        validator=_one_of("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    format: str = attrs.field(default="json", validator=_one_of("json", "text"))


DEFAULT_CATEGORIES: Final = {
    name: "" for name in ("movies", "tv", "music", "books", "software", "other")
}


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration. ``categories`` maps each allowed category to its save path
    ('' means: let qBittorrent choose, as it would for a torrent added in its UI)."""

    service: ServiceConfig = ServiceConfig()
    rabbitmq: RabbitmqConfig = RabbitmqConfig()
    qbittorrent: QbittorrentConfig = QbittorrentConfig()
    polling: PollingConfig = PollingConfig()
    commands: CommandsConfig = CommandsConfig()
    categories: Mapping[str, str] = attrs.field(factory=lambda: dict(DEFAULT_CATEGORIES))
    history: HistoryConfig = HistoryConfig()
    state: StateConfig = StateConfig()
    logging: LoggingConfig = LoggingConfig()
    source: str = "<defaults>"
    #: Things that work but should be fixed, logged at start (e.g. a readable password file).
    warnings: tuple[str, ...] = ()
