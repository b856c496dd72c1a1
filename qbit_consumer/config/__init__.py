"""The INI configuration, parsed once at start into frozen attrs classes (``sections``) by
``loading``: one ConfigError line for whatever is wrong."""

from qbit_consumer.config.loading import ENV_PREFIX, load_config
from qbit_consumer.config.sections import (
    DEFAULT_CATEGORIES,
    CommandsConfig,
    Config,
    HistoryConfig,
    LoggingConfig,
    PollingConfig,
    QbittorrentConfig,
    RabbitmqConfig,
    ServiceConfig,
    StateConfig,
)

__all__ = [
    "DEFAULT_CATEGORIES",
    "ENV_PREFIX",
    "CommandsConfig",
    "Config",
    "HistoryConfig",
    "LoggingConfig",
    "PollingConfig",
    "QbittorrentConfig",
    "RabbitmqConfig",
    "ServiceConfig",
    "StateConfig",
    "load_config",
]
