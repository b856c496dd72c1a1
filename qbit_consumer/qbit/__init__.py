"""qBittorrent's Web API. The only package that imports qbittorrentapi (and requests).

Modules: ``client`` (``QbitClient``: one session for one thread, every third-party error
translated into ours), ``login`` (``LoginGate``: when qBittorrent may be asked again after it
refused us, shared by every thread of the process).
"""
