"""Keeping secrets out of everything the service prints, logs or publishes.

A URL may carry a password in its userinfo (``amqp://user:secret@host``, or
``http://user:secret@host`` for a qBittorrent behind a reverse proxy with basic auth). Every
URL that reaches a log line, an event, an error message or the output of ``check`` goes
through ``redact_url`` first.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """The URL (or comma-separated URLs) with each password replaced by ``***``."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: say nothing of what it holds
        return "<unparseable URL>" if "@" in url else url
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()
