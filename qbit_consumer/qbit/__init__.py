"""qBittorrent's Web API. The only package that imports qbittorrentapi (and requests).

Modules: ``client`` (``QbitClient``: one session for one thread, every third-party error
translated into ours where it enters), ``session`` (qbittorrent-api's client as we need it:
our credentials only, our cookie jar, the Web API version asked once per login), ``login``
(``LoginGate``: when qBittorrent may be asked again after it refused us, shared by every
thread of the process), ``worker`` (a thread that owns a client for another thread).
"""

from qbit_consumer.qbit.client import QbitClient
from qbit_consumer.qbit.login import LoginGate

__all__ = ["LoginGate", "QbitClient"]
