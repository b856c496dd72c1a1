"""When qBittorrent may be asked again after it refused us, for every thread of the process.

No I/O here: ``qbit`` tells the gate what qBittorrent answered, and asks it before each request.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Final, Literal

from qbit_consumer.errors import TransientError

#: Waits after refused logins in a row (a wrong username or password): 30 s after the first,
#: 300 s after the second, then an hour after each further one, forever.
REFUSED_LOGIN_BACKOFF: Final = (30.0, 300.0, 3600.0)
#: Waits after 403 answers in a row (our IP banned, or a reverse proxy refusing us): the first,
#: doubled after each further 403 up to the cap, qBittorrent's default ban of an hour.
FORBIDDEN_BACKOFF_BASE: Final = 30.0
FORBIDDEN_BACKOFF_CAP: Final = 3600.0


class LoginGate:
    """When qBittorrent may next be asked after it refused us; shared by every QbitClient of
    the process, so that all its threads together keep one pace.

    Two refusals, told apart by type, cost differently:

    * refused credentials spend one of the 5 failed logins after which qBittorrent bans the IP
      for an hour: a refused login (``LoginFailed``: wrong username or password), and from 5.2
      a 401 to a request whose HTTP Basic credentials (the userinfo of the configured URL)
      qBittorrent refuses, which it counts the same way. Its counter per IP is reset only
      by a successful login, by the ban itself, or by a qBittorrent restart, never by time, so
      every refusal we cause stays counted. Hence the careful start (30 s, then 300 s), which
      leaves the person fixing the password two attempts of their own, then one try an hour.
      The trade-off: a password that stays wrong spends the 4th and 5th attempts after about
      one and two hours, and the 5th earns the IP a ban (one hour by default; on Docker's
      bridge network every container shares that IP), after which the count starts over. The
      gain: a login that qBittorrent refused for a while (its password reset and restored, a
      proxy in front of it refusing logins during maintenance) comes back without a restart,
      and the service never stops asking for good.
    * a 403 (``Forbidden403Error``: the IP is banned, or a reverse proxy forbids us) spends no
      budget: qBittorrent does not count a login refused during a ban, and the ban ends by
      itself. So we back off exponentially from ``FORBIDDEN_BACKOFF_BASE`` to
      ``FORBIDDEN_BACKOFF_CAP`` and keep asking at that pace.

    Every wait is on ``time.monotonic``: a jump of the wall clock neither shortens nor
    lengthens it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused = 0  # refused logins since the last success
        self._forbidden = 0  # 403 answers since the last success
        self._last: Literal["refused", "forbidden"] | None = None  # since the last success
        self._why = ""  # the adapter's account of the last refusal, for the health report
        self._open_at = 0.0  # time.monotonic() when the next attempt may go out

    def check(self) -> None:
        """:raises TransientError: while no request may go out."""
        with self._lock:
            wait = self._open_at - time.monotonic()
            if wait > 0:
                raise TransientError(f"not asking qBittorrent for now: {self._reason(wait)}")

    def refused(self, why: str) -> tuple[int, float]:
        """qBittorrent refused our credentials (``why`` says which and what to check):
        (refusals in a row, seconds until the next attempt)."""
        with self._lock:
            self._refused += 1
            self._last, self._why = "refused", why
            steps = REFUSED_LOGIN_BACKOFF
            return self._refused, self._shut(steps[min(self._refused, len(steps)) - 1])

    def forbidden(self, why: str) -> tuple[int, float]:
        """qBittorrent answered 403 (``why`` says what it may mean): (403s in a row, seconds
        until the next attempt)."""
        with self._lock:
            self._forbidden += 1
            self._last, self._why = "forbidden", why
            doubled = FORBIDDEN_BACKOFF_BASE * 2 ** min(self._forbidden - 1, 32)
            return self._forbidden, self._shut(min(doubled, FORBIDDEN_BACKOFF_CAP))

    def succeeded(self) -> bool:
        """qBittorrent answered a request. True if that reopened the gate."""
        with self._lock:
            was_shut = self._last is not None
            self._refused = self._forbidden = 0
            self._last = None
            self._open_at = 0.0
            return was_shut

    def shut_reason(self) -> str | None:
        """Why qBittorrent refuses us, until it next accepts a request; None while it does.

        Safe from any thread (the health report reads it from the main thread)."""
        with self._lock:
            if self._last is None:
                return None
            return self._reason(self._open_at - time.monotonic())

    def _shut(self, seconds: float) -> float:
        self._open_at = time.monotonic() + seconds
        return seconds

    def _reason(self, wait: float) -> str:
        times = self._refused if self._last == "refused" else self._forbidden
        when = f"next attempt in {math.ceil(wait)} s" if wait > 0 else "next attempt now"
        return f"{self._why} ({times} time(s) in a row); {when}"
