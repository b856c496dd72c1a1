"""qbittorrent-api's client as this service needs it: our credentials only, our cookie jar,
and qBittorrent's Web API version asked for once per login (see ``Client``)."""

from __future__ import annotations

import email.message
import re
from typing import Any, Final

import qbittorrentapi
from requests.cookies import RequestsCookieJar

#: The attributes of a Set-Cookie header that make ``http.cookiejar`` expire a cookie.
_EXPIRY: Final = re.compile(r";\s*(?:expires|max-age)=[^;]*", re.IGNORECASE)


class WithoutExpiry:
    """A response as ``http.cookiejar`` reads it, with the expiry taken out of its cookies."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def info(self) -> email.message.Message:
        headers = email.message.Message()
        for name, value in self._response.info().items():
            if name.lower() in ("set-cookie", "set-cookie2"):
                value = _EXPIRY.sub("", value)
            headers[name] = value
        return headers


class SessionCookies(RequestsCookieJar):
    """Keeps qBittorrent's session cookie for as long as qBittorrent accepts it.

    From 5.2 the cookie says ``expires=`` qBittorrent's clock plus its session timeout (an
    hour by default), and ``http.cookiejar`` compares that with this machine's clock. With
    this clock ahead of qBittorrent's by the timeout (qBittorrent on another host; a clock
    corrected by NTP) the cookie is dropped as it arrives: every request then gets 403 right
    after each login, which looks like a ban. qBittorrent knows when its session ends (it
    answers 403, and qbittorrent-api logs in again), so the cookie is kept without expiry.
    """

    def extract_cookies(self, response: Any, request: Any) -> None:
        if any(_EXPIRY.search(value) for value in response.info().get_all("Set-Cookie", ())):
            response = WithoutExpiry(response)  # only a login's answer sets a cookie
        super().extract_cookies(response, request)


class Client(qbittorrentapi.Client):
    """qbittorrent-api's client, with our credentials only, our cookie jar, and qBittorrent's
    Web API version asked for once per login.

    Credentials: qbittorrent-api reads ``QBITTORRENTAPI_PASSWORD``, ``_API_KEY`` and
    ``_DO_NOT_VERIFY_WEBUI_CERTIFICATE`` from the environment for whatever it is given empty:
    a key meant for another tool would silently replace the password, and a variable could
    turn TLS verification off. The configuration is the only source here (it has its own
    environment overrides), so those are set back to what we passed.

    The version: qbittorrent-api asks for it before every ``torrents/add`` (it picks parameter
    names by version): one extra request per add, half of what a one-magnet add costs. The
    version can only change with a qBittorrent restart, which ends our session: the next
    request gets a 403, qbittorrent-api logs in again, and that login clears the cached answer;
    so does a connection failure (qBittorrent may be restarting; with an API key there is no
    login, and that failure is what clears it). The add retried right after such a login
    still goes out with the old version's parameter names; the parameters we send are the
    same in every version.
    """

    _cached_web_api_version: str | None = None

    def __init__(
        self, *, username: str, password: str, api_key: str, verify_tls: bool, **kwargs: Any
    ) -> None:
        super().__init__(
            username=username,
            password=password,
            api_key=api_key,
            VERIFY_WEBUI_CERTIFICATE=verify_tls,
            **kwargs,
        )
        self.username, self._password, self._api_key = username, password, api_key
        self._VERIFY_WEBUI_CERTIFICATE = verify_tls

    @property
    def _session(self) -> Any:
        fresh = self._http_session is None  # a new one after each login
        session = super()._session
        if fresh:
            session.cookies = SessionCookies()
        return session

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
