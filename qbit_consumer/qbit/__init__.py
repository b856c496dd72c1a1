"""qBittorrent's Web API. The only package that imports qbittorrentapi (and requests).

Modules: ``client`` (``QbitClient``: one session for one thread, every third-party error
translated into ours where it enters), ``session`` (qbittorrent-api's client as we need it:
our credentials only, our cookie jar, the Web API version asked once per login), ``login``
(``LoginGate``: when qBittorrent may be asked again after it refused us, shared by every
thread of the process), ``worker`` (a thread that owns a client for another thread), ``lean``
(requests without the character-set guesser it would load).
"""

from qbit_consumer.qbit.lean import leave_out_charset_guessing

leave_out_charset_guessing()  # before any module of this package imports requests

from qbit_consumer.qbit.client import QbitClient  # noqa: E402
from qbit_consumer.qbit.login import LoginGate  # noqa: E402

__all__ = ["LoginGate", "QbitClient"]
