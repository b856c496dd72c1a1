"""A .torrent file carried by a ``downloads.add`` (CONTRACT section 4a): decoded and checked
before qBittorrent sees it, and its info-hashes computed here, so that the download's ``hash``
is known before the add, by the same rule as a magnet's.

Bencode is read by ``fastbencode`` (the breezy/dulwich project's, with a pure-Python fallback
for any NAS architecture): it accepts only canonical bencode (sorted keys, no leading zeros,
nothing after the end), so the info dictionary encoded again is byte for byte the one in the
file, and its SHA-1 (v1) and SHA-256 (v2) are the info-hashes qBittorrent computes. It is
imported with the first .torrent a service decodes: a deployment that only sends magnets does
not carry it (0.6 MB resident).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Final

import attrs

from qbit_consumer.errors import INVALID_TORRENT, InvalidCommand
from qbit_consumer.model import download_hash, keys_of

#: BEP 52: a v2 (or hybrid) torrent's info dictionary says ``meta version`` 2.
_META_VERSION: Final = b"meta version"


@attrs.frozen(kw_only=True)
class TorrentFile:
    data: bytes = attrs.field(repr=False)
    infohash_v1: str | None
    infohash_v2: str | None
    display_name: str | None
    private: bool

    @property
    def hash(self) -> str:
        """The download's stable key in events, by the magnet's rule (``model.download_hash``)."""
        key = download_hash(self.infohash_v1, self.infohash_v2)
        assert key is not None  # parse_torrent requires v1 pieces or v2
        return key

    @property
    def keys(self) -> tuple[str, ...]:
        return keys_of(self.infohash_v1, self.infohash_v2)


def base64_length(size: int) -> int:
    """How long ``size`` bytes are in padded base64."""
    return 4 * ((size + 2) // 3)


def parse_torrent(text: str, max_bytes: int) -> TorrentFile:
    """:raises InvalidCommand: ``invalid_torrent``, saying what is wrong."""
    if len(text) > base64_length(max_bytes):
        raise _invalid(
            f"the .torrent file is over {max_bytes} bytes ([commands] max_torrent_bytes)"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("field 'torrent' is not base64 (RFC 4648, with its padding)") from None
    if len(data) > max_bytes:  # the base64 length allows up to 2 bytes more
        raise _invalid(
            f"the .torrent file is over {max_bytes} bytes ([commands] max_torrent_bytes)"
        )
    import fastbencode  # the first .torrent only (see the module's docstring)

    try:
        decoded = fastbencode.bdecode(data)
    except (ValueError, TypeError) as exc:
        raise _invalid(f"the .torrent file is not bencode: {exc}") from None
    info = decoded.get(b"info") if isinstance(decoded, dict) else None
    if not isinstance(info, dict):
        raise _invalid("the .torrent file has no info dictionary")
    encoded = fastbencode.bencode(info)
    v2 = info.get(_META_VERSION) == 2
    if b"pieces" not in info and not v2:
        raise _invalid("the .torrent's info dictionary has neither pieces (v1) nor meta version 2")
    return TorrentFile(
        data=data,
        infohash_v1=hashlib.sha1(encoded).hexdigest() if b"pieces" in info else None,  # noqa: S324
        infohash_v2=hashlib.sha256(encoded).hexdigest() if v2 else None,
        display_name=_text(info.get(b"name")),
        private=info.get(b"private") == 1,
    )


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


def _invalid(detail: str) -> InvalidCommand:
    return InvalidCommand(INVALID_TORRENT, detail)
