"""Keeping secrets out of everything the service prints, logs or publishes.

A URL may carry a password in its userinfo (``amqp://user:secret@host``, or
``http://user:secret@host`` for a qBittorrent behind a reverse proxy with basic auth). Every
URL that reaches a log line, an event, an error message or the output of ``check`` goes
through ``redact_url`` first.

That is the first line of defence, and it depends on every message being written with care.
The second is ``Scrubber``: it knows the configured secrets themselves and removes them from
text whose origin we do not control (a third-party error message, a library's log line).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote, urlsplit

if TYPE_CHECKING:  # config may one day need redact_url for its own messages
    from qbit_consumer.config import Config


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


def url_passwords(url: str) -> set[str]:
    """The password in the userinfo of the URL (or of each comma-separated URL), both as
    written (percent-encoded) and decoded: either may be printed."""
    found: set[str] = set()
    for part in url.split(","):
        try:
            password = urlsplit(part.strip()).password
        except ValueError:  # config validation refuses such a URL; nothing to learn from it
            continue
        if password:
            found |= {password, unquote(password)}
    return found


def config_secrets(cfg: Config) -> set[str]:
    """Every secret the configuration holds: the qBittorrent password and API key, and the
    passwords in the configured URLs."""
    found = {cfg.qbittorrent.password, cfg.qbittorrent.api_key}
    found |= url_passwords(cfg.rabbitmq.url) | url_passwords(cfg.qbittorrent.url)
    return {secret for secret in found if secret}


class Scrubber:
    """Replaces known secrets with ``***`` in any text.

    A secret is looked for in the forms it takes when printed: as is and percent-encoded (in
    a URL or a form body), plus whatever ``encodings`` the caller's output applies (a JSON log
    line escapes quotes and backslashes, a text log line control characters), each applied up
    to twice (a ``%r`` inside a JSON line is escaped twice). The longest form is tried first,
    so a secret that contains another is removed whole.
    """

    def __init__(
        self, secrets: Iterable[str], encodings: Iterable[Callable[[str], str]] = ()
    ) -> None:
        forms = {
            form
            for secret in secrets
            if secret
            for form in (secret, quote(secret), quote(secret, safe=""), quote_plus(secret))
        }
        encodings = list(encodings)
        for _ in range(2):
            forms |= {encode(form) for form in forms for encode in encodings}
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub("***", text)
