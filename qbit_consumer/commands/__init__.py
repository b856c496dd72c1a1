"""The command path: the consumer thread takes commands from RabbitMQ, and each is carried out
in qBittorrent and settled (ack, retry or dead-letter) in one place."""
