"""qBittorrent's Web API through qbittorrent-api. The only module that imports qbittorrentapi.

Versions 4.5 to 5.2 differ in ways that matter here (CONTRACT section 6):

* ``torrents/add`` answers ``Ok.``/``Fails.`` up to 5.1, and JSON (``success_count`` ...) or
  409 Conflict from 5.2; we treat every answer the same way: accepted or not.
* login answers 200 ``Ok.`` (up to 5.1) or 204 with an empty body (5.2), with a session cookie
  named ``SID`` or ``QBT_SID_<port>``; qbittorrent-api handles both.
* after 5 failed logins qBittorrent bans the client IP for an hour, and with Docker's bridge
  network that IP is shared by every container. ``login_gate.LoginGate`` paces our logins (and every
  request after a 403) so that we spend that budget slowly and never give up for good.

A ``QbitClient`` is not thread-safe (neither is qbittorrent-api's Client): each thread that
talks to qBittorrent has its own. Every call is bounded by ``timeout_seconds``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import qbittorrentapi

from qbit_consumer.config import QbittorrentConfig
from qbit_consumer.errors import QBITTORRENT_REJECTED, InvalidCommand, TransientError
from qbit_consumer.login_gate import LoginGate
from qbit_consumer.redact import Scrubber, redact_url, url_passwords
from qbit_consumer.torrents import Torrent

log = logging.getLogger(__name__)


class Reachability:
    """Whether qBittorrent answers, as the poller last found; read by the consumer."""

    def __init__(self) -> None:
        self.known = threading.Event()  # set after the first poll, good or bad
        self._up = threading.Event()

    def set(self, up: bool) -> None:
        (self._up.set if up else self._up.clear)()
        self.known.set()

    @property
    def up(self) -> bool:
        return self._up.is_set()


class _Client(qbittorrentapi.Client):
    """qbittorrent-api's client, asking for qBittorrent's Web API version once per login.

    qbittorrent-api asks for it before every ``torrents/add`` (it picks parameter names by
    version): one extra request per add, half of what a one-magnet add costs. The version can
    only change with a qBittorrent restart, which ends our session: the next request gets a
    403, qbittorrent-api logs in again, and that login clears the cached answer; so does a
    connection failure (qBittorrent may be restarting). The add retried right after such a
    login still goes out with the old version's parameter names; the parameters we send are
    the same in every version.
    """

    _cached_web_api_version: str | None = None

    def app_web_api_version(self, **kwargs: Any) -> str:
        if kwargs:
            return str(super().app_web_api_version(**kwargs))
        if self._cached_web_api_version is None:
            self._cached_web_api_version = str(super().app_web_api_version())
        return self._cached_web_api_version

    def auth_log_in(self, *args: Any, **kwargs: Any) -> None:
        self._cached_web_api_version = None
        super().auth_log_in(*args, **kwargs)

    def forget_version(self) -> None:
        self._cached_web_api_version = None


class QbitClient:
    """One qBittorrent session, for one thread."""

    def __init__(self, cfg: QbittorrentConfig, gate: LoginGate) -> None:
        self._cfg = cfg
        self._gate = gate
        self._known_categories: set[str] = set()
        # qbittorrent-api's own messages may quote what it was given (a URL with userinfo).
        self._scrub = Scrubber({cfg.password, *url_passwords(cfg.url)})
        connect_timeout = min(5.0, cfg.timeout_seconds)
        self._client = _Client(
            host=cfg.url,
            username=cfg.username,
            password=cfg.password,
            VERIFY_WEBUI_CERTIFICATE=cfg.verify_tls,
            SIMPLE_RESPONSES=True,
            REQUESTS_ARGS={"timeout": (connect_timeout, cfg.timeout_seconds)},
            # qbittorrent-api already tries each request twice; a third, silent urllib3 retry
            # would only stretch the worst case of a call.
            HTTPADAPTER_ARGS={"max_retries": 0},
            RAISE_NOTIMPLEMENTEDERROR_FOR_UNIMPLEMENTED_API_ENDPOINTS=True,
        )

    # -- queries ---------------------------------------------------------------------------

    def version(self) -> tuple[str, str]:
        """(application version, Web API version), e.g. ("v4.5.2", "2.8.19")."""
        with self._translate("reading the version"):
            return str(self._client.app_version()), str(self._client.app_web_api_version())

    def ping(self) -> None:
        """The cheapest authenticated call: proves qBittorrent answers and we are logged in."""
        with self._translate("checking that qBittorrent answers"):
            self._client.app_version()

    def torrents(self, ids: Iterable[str]) -> list[Torrent]:
        """The torrents listed under any of ``ids`` (qBittorrent matches torrent ids only)."""
        wanted = sorted({i for i in ids if len(i) == 40})
        if not wanted:
            return []
        with self._translate("listing torrents"):
            items = self._client.torrents_info(torrent_hashes=wanted)
        return [Torrent.from_api(item) for item in items]

    def all_torrents(self) -> list[Torrent]:
        """Every torrent: expensive on a large library (a full ``torrents/info``), so only
        used where a cheaper filter cannot answer."""
        with self._translate("listing all torrents"):
            items = self._client.torrents_info()
        return [Torrent.from_api(item) for item in items]

    # -- changes ---------------------------------------------------------------------------

    def ensure_category(self, name: str, save_path: str) -> None:
        """Create ``name`` when qBittorrent does not have it; never change an existing one."""
        if name in self._known_categories:
            return
        with self._translate("reading categories"):
            existing = self._client.torrents_categories()
        if name in existing:
            current = str(existing[name].get("savePath", ""))
            if save_path and current.rstrip("/") != save_path.rstrip("/"):
                log.warning(
                    "category %r exists in qBittorrent with save path %r, config says %r; "
                    "torrents are added with the configured path, the category is left as is",
                    name,
                    current,
                    save_path,
                )
        else:
            with (
                self._translate("creating a category"),
                contextlib.suppress(qbittorrentapi.Conflict409Error),
            ):
                self._client.torrents_create_category(name=name, save_path=save_path or None)
            log.info("created category %r in qBittorrent", name, extra={"category": name})
        self._known_categories.add(name)

    def add_magnet(self, uri: str, *, category: str, tags: Iterable[str], save_path: str) -> bool:
        """Hand a magnet to qBittorrent. True if it accepted the torrent as new.

        False is qBittorrent's ``Fails.`` (up to 5.1) or 409 (5.2): a duplicate or a magnet it
        refused; the caller finds out which.
        :raises InvalidCommand: qBittorrent answered 4xx (it will never accept this request).
        """
        options: dict[str, Any] = {"urls": uri, "category": category, "tags": list(tags)}
        if save_path:
            # A save path only sticks in manual mode; automatic mode would use the category's.
            options.update(save_path=save_path, use_auto_torrent_management=False)
        try:
            with self._translate("adding a torrent"):
                answer = self._client.torrents_add(**options)
        except _Conflict:
            return False
        if isinstance(answer, str):
            return answer.strip() != "Fails."
        if isinstance(answer, Mapping):  # 5.2: {"success_count": .., "pending_count": ..}
            return int(answer.get("success_count", 0)) + int(answer.get("pending_count", 0)) > 0
        return True  # very old versions answered nothing on success

    def add_tags(self, torrent_id: str, tags: Iterable[str]) -> None:
        tags = list(tags)
        if tags:
            with self._translate("tagging a torrent"):
                self._client.torrents_add_tags(tags=tags, torrent_hashes=torrent_id)

    def close(self) -> None:
        """Log out, so qBittorrent frees the session (it keeps one per login otherwise)."""
        with contextlib.suppress(Exception):
            if self._client.is_logged_in:
                self._client.auth_log_out()

    # -- error translation -------------------------------------------------------------------

    @contextlib.contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        self._gate.check()
        try:
            yield
        except qbittorrentapi.Conflict409Error:
            raise _Conflict() from None
        except qbittorrentapi.LoginFailed as exc:
            refusals, wait = self._gate.refused()
            log.error(
                "qBittorrent refused the login as %r (%d in a row); next attempt in %.0f s",
                self._cfg.username,
                refusals,
                wait,
            )
            raise TransientError(f"qBittorrent login failed while {doing}") from exc
        except qbittorrentapi.Forbidden403Error as exc:
            forbidden, wait = self._gate.forbidden()
            if forbidden == 1:  # once per streak: the wait grows to an hour, the story is the same
                log.error(
                    "qBittorrent answers 403 Forbidden (our IP banned after failed logins, or a "
                    "reverse proxy refusing us); asking again in %.0f s, then less and less "
                    "often, at least once an hour",
                    wait,
                )
            raise TransientError(
                f"qBittorrent answered 403 Forbidden while {doing} (IP banned after failed "
                "logins, or a reverse proxy refusing us)"
            ) from exc
        except qbittorrentapi.Unauthorized401Error as exc:
            raise TransientError(
                f"qBittorrent answered 401 Unauthorized while {doing}: a reverse proxy or "
                "Host-header/CSRF check is refusing us"
            ) from exc
        except qbittorrentapi.HTTP5XXError as exc:
            raise TransientError(
                f"qBittorrent failed while {doing}: HTTP {exc.http_status_code}"
            ) from exc
        except qbittorrentapi.HTTP4XXError as exc:
            if doing == "adding a torrent":
                raise InvalidCommand(
                    QBITTORRENT_REJECTED,
                    f"qBittorrent refused the torrent with HTTP {exc.http_status_code}",
                ) from exc
            raise TransientError(
                f"qBittorrent answered HTTP {exc.http_status_code} while {doing}"
            ) from exc
        except qbittorrentapi.APIConnectionError as exc:
            self._client.forget_version()
            raise TransientError(
                f"qBittorrent is unreachable at {redact_url(self._cfg.url)} while {doing}"
            ) from exc
        except qbittorrentapi.APIError as exc:
            raise TransientError(
                f"qBittorrent API error while {doing}: {self._scrub(str(exc))}"
            ) from exc
        else:
            if self._gate.succeeded():
                log.info("qBittorrent accepts our requests again")


class _Conflict(Exception):
    """qBittorrent 5.2's 409: nothing was added (a duplicate, or a refused magnet)."""
