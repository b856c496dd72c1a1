"""The service's own exceptions.

Third-party errors (pika, qbittorrent-api, json, cattrs) are translated into these where they
enter our code, so that the rest of the service decides what to do from the exception type alone:

* ``ConfigError``: the configuration is unusable; the process exits with code 2.
* ``InvalidCommand``: this command can never succeed; it goes to the dead-letter queue.
* ``TransientError``: it may work later; the command goes through the retry queue.
* ``BrokerUnavailable``: the RabbitMQ connection is gone; reconnect and carry on.
* ``TopologyConflict``: a queue or exchange exists with other arguments; stop, delete nothing.
* ``HistoryUnavailable``: the history stream cannot be read (``qbit-consumer history``).
* ``ShuttingDown``: the service is stopping; the work in hand is abandoned, its message unacked.

The one place that maps these onto ack / retry / dead-letter is ``qbit_consumer.commands.handling``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: Dead-letter reasons, as they appear in the ``x-error-reason`` header (CONTRACT section 4).
INVALID_JSON: Final = "invalid_json"
INVALID_MESSAGE: Final = "invalid_message"
INVALID_MAGNET: Final = "invalid_magnet"
INVALID_TORRENT: Final = "invalid_torrent"
INVALID_CATEGORY: Final = "invalid_category"
UNKNOWN_COMMAND: Final = "unknown_command"
TOO_LARGE: Final = "too_large"
QBITTORRENT_REJECTED: Final = "qbittorrent_rejected"
RETRIES_EXHAUSTED: Final = "retries_exhausted"
NOT_MANAGED: Final = "not_managed"
NOT_FOUND: Final = "not_found"

REASONS: Final = frozenset(
    {
        INVALID_JSON,
        INVALID_MESSAGE,
        INVALID_MAGNET,
        INVALID_TORRENT,
        INVALID_CATEGORY,
        UNKNOWN_COMMAND,
        TOO_LARGE,
        QBITTORRENT_REJECTED,
        RETRIES_EXHAUSTED,
        NOT_MANAGED,
        NOT_FOUND,
    }
)


class QbitConsumerError(Exception):
    """Root of every error this service raises on purpose."""


class ConfigError(QbitConsumerError):
    """The configuration cannot be used. The message is the one line the user sees."""


class InvalidCommand(QbitConsumerError):
    """A command that will never succeed, however often it is retried.

    ``reason`` is one of the dead-letter reason codes; ``detail`` is one readable sentence
    for the self-hoster who looks at the dead-letter queue.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TransientError(QbitConsumerError):
    """A failure that may go away on its own (qBittorrent down, 5xx, timeout, login)."""


class BrokerUnavailable(QbitConsumerError):
    """The connection to RabbitMQ failed or was lost; the caller reconnects."""


class TopologyConflict(QbitConsumerError):
    """A queue or exchange already exists with arguments other than ours.

    Fatal on purpose: redeclaring or deleting it could lose the self-hoster's messages.
    """


class HistoryUnavailable(QbitConsumerError):
    """The history stream cannot be read: it does not exist (history disabled, or the service
    never ran against this broker), or it is not a stream. The message is the one line the
    user sees."""


class QueueMissing(QbitConsumerError):
    """A queue an operator command reads does not exist (the service never declared it on this
    broker and vhost, or someone deleted it). The message names the queue."""


class ShuttingDown(QbitConsumerError):
    """The service is stopping while a command waits for qBittorrent: the call is abandoned and
    the command stays unacked, so RabbitMQ hands it out again (SIGTERM must end the process
    within 10 s even when a qBittorrent call hangs)."""


class StateError(QbitConsumerError):
    """The state file is unusable; the message is the one line the user sees."""


class StateCorrupt(StateError):
    """The state file is damaged or is not a state file; ``qbit-consumer recover`` moves it
    aside and rebuilds it from history."""


class StateUnavailable(QbitConsumerError):
    """The state file cannot be written now: disk full, read-only, I/O error, file gone.

    Not fatal, unlike ``StateError``: the cause is outside the service and may go away, and
    the registry holds everything the file should hold. ``reason`` is the short why, for the
    log and the healthcheck.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
