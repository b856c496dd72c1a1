"""The tracking path: which downloads are followed (registry, state file), what qBittorrent
says about them (poller, lifecycle rules), and how their events reach RabbitMQ (publish queue,
publisher thread)."""
