"""qbit-consumer: makes qBittorrent downloads a first-class event source on RabbitMQ."""

__version__ = "0.1.0"
