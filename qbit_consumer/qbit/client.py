"""qBittorrent's Web API through qbittorrent-api. The only module that imports qbittorrentapi.

Versions 4.5 to 5.3 differ in ways that matter here (CONTRACT section 6; docs/compatibility.md
has what the real programs answered):

* ``torrents/add`` answers ``Ok.``/``Fails.`` up to 5.1, and JSON (``success_count`` ...) or
  409 Conflict from 5.2; we treat every answer the same way: accepted or not.
* login answers 200 ``Ok.`` (up to 5.1) or 204 with an empty body (5.2), with a session cookie
  named ``SID`` or ``QBT_SID_<port>``; qbittorrent-api handles both. From 5.2 the cookie
  carries an expiry on qBittorrent's clock, which ``session.SessionCookies`` keeps off ours.
* from 5.2 an API key (``Authorization: Bearer``) replaces the login; a refused key is a 403.
  From 5.2 too, the userinfo of the URL (which ``requests`` sends as HTTP Basic auth) is
  checked by qBittorrent itself: a wrong one is a 401 on every request.
* after 5 failed logins qBittorrent bans the client IP for an hour (from 5.2, each refused
  Basic-auth request counts as one), and with Docker's bridge network that IP is shared by
  every container. ``login_gate.LoginGate`` paces our requests after each refusal so that we
  spend that budget slowly and never give up for good.

A ``QbitClient`` is not thread-safe (neither is qbittorrent-api's Client): each thread that
talks to qBittorrent has its own. Every call is bounded by ``timeout_seconds``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import ijson
import qbittorrentapi
import requests
import urllib3

from qbit_consumer.config import QbittorrentConfig
from qbit_consumer.errors import QBITTORRENT_REJECTED, InvalidCommand, TransientError
from qbit_consumer.model import Torrent
from qbit_consumer.qbit.login import LoginGate
from qbit_consumer.qbit.session import Client
from qbit_consumer.redact import Scrubber, redact_url, url_passwords

log = logging.getLogger(__name__)


class QbitClient:
    """One qBittorrent session, for one thread."""

    def __init__(self, cfg: QbittorrentConfig, gate: LoginGate) -> None:
        self._cfg = cfg
        self._gate = gate
        self._known_categories: set[str] = set()
        # qbittorrent-api's own messages may quote what it was given (a URL with userinfo).
        self._scrub = Scrubber({cfg.password, cfg.api_key, *url_passwords(cfg.url)})
        connect_timeout = min(5.0, cfg.timeout_seconds)
        # With a key there is no login: a refused key must not fall back to the password.
        self._client = Client(
            host=cfg.url,
            username="" if cfg.api_key else cfg.username,
            password="" if cfg.api_key else cfg.password,
            api_key=cfg.api_key,
            verify_tls=cfg.verify_tls,
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

    def tagged(self, tag: str) -> Iterator[Torrent]:
        """Every torrent with ``tag`` (the managed tag: what this service added), each parsed
        as its part of the answer arrives. On a library of 10,000 the answer is ~15 MB of
        JSON: parsed in one piece it took the process from 45 to 87 MB and left it 15 MB
        larger for good; read item by item (``ijson``) it takes one torrent's worth. Paging
        with ``limit``/``offset`` is no way out: qBittorrent builds the whole answer for each
        page (10 pages took 10 times as long).
        """
        with self._translate("listing tagged torrents"):
            response = self._client._get(
                _name=qbittorrentapi.APINames.Torrents,
                _method="info",
                params={"tag": tag},
                requests_args={"stream": True},
            )
        try:
            response.raw.decode_content = True  # qBittorrent may gzip it
            yield from (
                Torrent.from_api(item) for item in ijson.items(response.raw, "item", use_float=True)
            )
        except (ijson.JSONError, requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise TransientError(f"qBittorrent's list of tagged torrents broke off: {exc}") from exc
        finally:
            response.close()

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
        """Hand magnets (one per line) to qBittorrent. True if it took at least one as new.

        False is qBittorrent's ``Fails.`` (up to 5.1) or 409 (5.2): a duplicate or a torrent it
        refused; the caller finds out which.
        :raises InvalidCommand: qBittorrent answered 4xx (it will never accept this request).
        """
        return self._add({"urls": uri}, category, tags, save_path)

    def add_torrent_files(
        self, files: list[bytes], *, category: str, tags: Iterable[str], save_path: str
    ) -> bool:
        """Upload .torrent files in one ``torrents/add``; answers as ``add_magnet``."""
        files_by_name = {f"{n}.torrent": data for n, data in enumerate(files)}
        return self._add({"torrent_files": files_by_name}, category, tags, save_path)

    def _add(
        self, what: dict[str, Any], category: str, tags: Iterable[str], save_path: str
    ) -> bool:
        options: dict[str, Any] = {**what, "category": category, "tags": list(tags)}
        if save_path:
            # A save path only sticks in manual mode; automatic mode would use the category's.
            options.update(save_path=save_path, use_auto_torrent_management=False)
        try:
            with self._translate("adding a torrent", refusal_rejects=True):
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

    def remove_torrent(self, torrent_id: str, *, delete_files: bool) -> None:
        """Remove one torrent, with its data when ``delete_files``."""
        with self._translate("removing a torrent"):
            self._client.torrents_delete(delete_files=delete_files, torrent_hashes=torrent_id)

    def pause_torrent(self, torrent_id: str) -> None:
        """Stop one torrent: ``torrents/stop`` from Web API 2.11 (5.0), ``pause`` before; the
        version is asked once per login (``session.Client``)."""
        with self._translate("pausing a torrent"):
            self._client.torrents_stop(torrent_hashes=torrent_id)

    def resume_torrent(self, torrent_id: str) -> None:
        """Start one torrent again: ``torrents/start`` from 5.0, ``resume`` before."""
        with self._translate("resuming a torrent"):
            self._client.torrents_start(torrent_hashes=torrent_id)

    def close(self) -> None:
        """Log out, so qBittorrent frees the session (it keeps one per login otherwise)."""
        with contextlib.suppress(Exception):
            if self._client.is_logged_in:
                self._client.auth_log_out()

    # -- error translation -------------------------------------------------------------------

    @contextlib.contextmanager
    def _translate(self, doing: str, *, refusal_rejects: bool = False) -> Iterator[None]:
        """qbittorrent-api's errors as ours, ``doing`` only for the messages. A 4xx answer to a
        call made with ``refusal_rejects`` (an add: qBittorrent will never take this request)
        is an ``InvalidCommand``; to any other call, a ``TransientError``."""
        self._gate.check()
        try:
            yield
        except qbittorrentapi.Conflict409Error:
            raise _Conflict() from None
        except qbittorrentapi.LoginFailed as exc:
            why = (
                f"qBittorrent refused our login as {self._cfg.username!r}: check [qbittorrent] "
                "username and password (by default it bans an IP after 5 failed logins)"
            )
            self._spend_login(why)
            raise TransientError(f"qBittorrent login failed while {doing}") from exc
        except qbittorrentapi.Unauthorized401Error as exc:
            # From 5.2 a 401 is qBittorrent refusing the credentials the request carried (the
            # URL's userinfo as HTTP Basic auth), and it counts each one towards its ban.
            why = (
                f"qBittorrent answered 401 Unauthorized{self._said(exc)}: from 5.2 it checks "
                "the user and password in [qbittorrent] url (HTTP Basic auth) and counts each "
                "refusal as a failed login; or a reverse proxy in front of it refuses us"
            )
            self._spend_login(why)
            raise TransientError(f"{why} (while {doing})") from exc
        except qbittorrentapi.Forbidden403Error as exc:
            if self._cfg.api_key:
                why = (
                    f"qBittorrent answered 403 Forbidden{self._said(exc)} to our API key: check "
                    "[qbittorrent] api_key (keys need qBittorrent 5.2 or later), or our IP is "
                    "banned after failed logins"
                )
            else:
                why = (
                    f"qBittorrent answered 403 Forbidden{self._said(exc)}: our IP banned after "
                    "failed logins, or a reverse proxy refusing us"
                )
            forbidden, wait = self._gate.forbidden(why)
            if forbidden == 1:  # once per streak: the wait grows to an hour, the story is the same
                log.error(
                    "%s; asking again in %.0f s, then less and less often, at least once an hour",
                    why,
                    wait,
                )
            raise TransientError(f"{why} (while {doing})") from exc
        except qbittorrentapi.HTTP5XXError as exc:
            raise TransientError(
                f"qBittorrent failed while {doing}: HTTP {exc.http_status_code}"
            ) from exc
        except qbittorrentapi.HTTP4XXError as exc:
            if refusal_rejects:
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

    def _spend_login(self, why: str) -> None:
        """qBittorrent refused our credentials, which costs one of its failed logins: pace
        the next attempt, and say so each time (the waits are long)."""
        refusals, wait = self._gate.refused(why)
        log.error("%s (%d in a row); next attempt in %.0f s", why, refusals, wait)

    def _said(self, exc: qbittorrentapi.HTTPError) -> str:
        """What qBittorrent answered besides the status (its ban message), quoted, if any."""
        response = getattr(exc, "response", None)
        text = " ".join(str(getattr(response, "text", "") or "").split())[:200]
        if not text or text in ("Forbidden", "Unauthorized"):  # the status again
            return ""
        return f" ({self._scrub(text)!r})"


class _Conflict(Exception):
    """qBittorrent 5.2's 409: nothing was added (a duplicate, or a refused magnet)."""
