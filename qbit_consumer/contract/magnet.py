"""Magnet URI parsing, following libtorrent's ``parse_magnet_uri`` rules.

We parse the magnet ourselves, before qBittorrent sees it, for two reasons: a bad magnet must be
dead-lettered with a reason rather than answered with qBittorrent's bare ``Fails.``, and the
download's stable ``hash`` must be known before the torrent exists (qBittorrent's ``torrents/add``
up to 5.1 does not return it).

Rules (libtorrent ``src/magnet_uri.cpp``): the URI starts with ``magnet:?``; parameters are split
on ``&`` and ``=``; a numeric ``.N`` suffix on a name is ignored (``xt.1``); values are
percent-decoded. ``xt=urn:btih:`` carries a v1 SHA-1 as 40 hex or 32 base32 characters;
``xt=urn:btmh:`` carries a multihash that must be ``1220`` followed by 64 hex (a v2 SHA-256).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final
from urllib.parse import unquote, unquote_plus

import attrs

from qbit_consumer.contract.structure import short_repr
from qbit_consumer.errors import INVALID_MAGNET, InvalidCommand
from qbit_consumer.model import download_hash, keys_of

_HEX40: Final = re.compile(r"^[0-9a-fA-F]{40}$")
_HEX64: Final = re.compile(r"^[0-9a-fA-F]{64}$")
_BASE32: Final = re.compile(r"^[A-Za-z2-7]{32}$")
_INDEX_SUFFIX: Final = re.compile(r"\.\d+$")
# qBittorrent's torrents/add takes a newline-separated list of URLs: a magnet with a line break
# could smuggle an http URL past us. Whitespace and control characters are never valid in a URI.
_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f]")


@attrs.frozen(kw_only=True)
class Magnet:
    """A parsed magnet link. ``uri`` is passed to qBittorrent unchanged."""

    uri: str
    infohash_v1: str | None
    infohash_v2: str | None
    display_name: str | None

    @property
    def hash(self) -> str:
        """The download's stable key in events (``model.download_hash``)."""
        key = download_hash(self.infohash_v1, self.infohash_v2)
        assert key is not None  # parse_magnet requires one of the two
        return key

    @property
    def keys(self) -> tuple[str, ...]:
        """Every id qBittorrent may list this download under, now or after re-keying."""
        return keys_of(self.infohash_v1, self.infohash_v2)


def parse_magnet(uri: str) -> Magnet:
    """Parse and validate ``uri``.

    :raises InvalidCommand: reason ``invalid_magnet``, with a sentence saying what is wrong.
    """
    if not uri.lower().startswith("magnet:?"):
        scheme = uri.split(":", 1)[0] if ":" in uri[:16] else ""
        what = f"a URL of scheme {scheme!r}" if scheme else "not a URI"
        raise _invalid(f"only magnet:? links are accepted, this is {what}")
    if _FORBIDDEN.search(uri):
        raise _invalid("the magnet link contains whitespace or control characters")

    v1: str | None = None
    v2: str | None = None
    name: str | None = None
    for pair in uri[len("magnet:?") :].split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        key = _INDEX_SUFFIX.sub("", unquote(key)).lower()
        value = unquote(value)
        if key == "xt":
            kind, digest = _split_urn(value)
            if kind == "btih":
                v1 = _merge(v1, _parse_btih(digest), "btih")
            elif kind == "btmh":
                v2 = _merge(v2, _parse_btmh(digest), "btmh")
            # Other urns (sha1, ed2k, ...) belong to other networks; libtorrent ignores them.
        elif key == "dn" and name is None:
            name = unquote_plus(pair.partition("=")[2])  # libtorrent reads '+' as a space
    if v1 is None and v2 is None:
        raise _invalid("the magnet link has no xt=urn:btih: or xt=urn:btmh: info-hash")
    for digest in (v1, v2):
        # libtorrent treats an all-zero hash as "no hash": qBittorrent answers Ok. and drops it.
        if digest is not None and not digest.strip("0"):
            raise _invalid("the info-hash is all zeros")
    return Magnet(uri=uri, infohash_v1=v1, infohash_v2=v2, display_name=name)


def _split_urn(value: str) -> tuple[str, str]:
    lowered = value.lower()
    for kind in ("btih", "btmh"):
        prefix = f"urn:{kind}:"
        if lowered.startswith(prefix):
            return kind, value[len(prefix) :]
    return "", value


def v1_hex(digest: str) -> str | None:
    """A v1 info-hash as 40 lowercase hex, from either form a magnet carries it in (40 hex or
    32 base32); None when it is neither."""
    if _HEX40.match(digest):
        return digest.lower()
    if _BASE32.match(digest):
        try:
            return base64.b32decode(digest.upper()).hex()
        except binascii.Error:  # pragma: no cover - the regex admits only valid base32
            pass
    return None


def info_hash_keys(text: str) -> tuple[str, ...]:
    """The ids of a torrent named by one of its info-hashes in any form a platform or an
    operator gives it (40 hex, 32 base32 or 64 hex; whitespace around it ignored): a v1 hash
    as 40 lowercase hex, a v2 one whole and cut to 40 (``keys_of``). A command's ``hash`` and
    ``history --hash`` read it the same way.

    :raises ValueError: it is none of these.
    """
    value = text.strip()
    v1 = v1_hex(value)
    if v1 is not None:
        return (v1,)
    if _HEX64.match(value):
        return keys_of(value.lower())
    raise ValueError(
        f"{short_repr(text)} is not an info-hash (40 hex, 32 base32 or 64 hex characters)"
    )


def _parse_btih(digest: str) -> str:
    v1 = v1_hex(digest)
    if v1 is None:
        raise _invalid(f"btih info-hash {digest[:70]!r} is neither 40 hex nor 32 base32 characters")
    return v1


def _parse_btmh(digest: str) -> str:
    if not digest.startswith("1220") or not _HEX64.match(digest[4:]):
        raise _invalid(
            f"btmh info-hash {digest[:80]!r} is not a SHA-256 multihash (1220 + 64 hex characters)"
        )
    return digest[4:].lower()


def _merge(current: str | None, new: str, kind: str) -> str:
    if current is not None and current != new:
        raise _invalid(f"the magnet link carries two different {kind} info-hashes")
    return new


def _invalid(detail: str) -> InvalidCommand:
    return InvalidCommand(INVALID_MAGNET, detail)
