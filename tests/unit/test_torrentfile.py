"""A .torrent file is decoded and checked before qBittorrent sees it, and its info-hash is the
one another tool computes for it (the live suite checks v2 and hybrid ones against libtorrent
and qBittorrent)."""

from __future__ import annotations

import base64
import hashlib

import fastbencode
import pytest
import torf

from qbit_consumer.contract.torrentfile import base64_length, parse_torrent
from qbit_consumer.errors import InvalidCommand

CAP = 4 * 2**20


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_v1_torrent_has_the_info_hash_torf_computes_its_name_and_private_flag(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x01" * 70_000)
    made = torf.Torrent(path=tmp_path / "x.bin", piece_size=2**15, private=True)
    made.generate()

    parsed = parse_torrent(b64(made.dump()), CAP)

    assert (parsed.infohash_v1, parsed.infohash_v2) == (str(made.infohash), None)
    assert parsed.hash == str(made.infohash) and parsed.keys == (str(made.infohash),)
    assert (parsed.display_name, parsed.private) == ("x.bin", True)


def test_a_v2_only_torrent_is_known_by_its_v2_hash_cut_to_40_hex():
    info = {b"meta version": 2, b"name": b"v2", b"piece length": 2**14, b"file tree": {}}
    data = fastbencode.bencode({b"info": info, b"piece layers": {}})
    v2 = hashlib.sha256(fastbencode.bencode(info)).hexdigest()

    parsed = parse_torrent(b64(data), CAP)

    assert (parsed.infohash_v1, parsed.infohash_v2, parsed.hash) == (None, v2, v2[:40])
    assert parsed.keys == (v2, v2[:40])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not base64!", "not base64"),
        ("ZA", "not base64"),  # padding missing
        (b64(b"d4:spam4:eggse"), "no info dictionary"),
        (b64(b"i42e"), "no info dictionary"),
        (b64(b"d4:infod4:name1:xee"), "neither pieces (v1) nor meta version 2"),
        (b64(b"d4:infod4:name1:xe1:ai1ee"), "not bencode"),  # keys out of order
        (b64(b"d4:infod6:pieces0:ee junk"), "not bencode"),
        (b64(b"\x00" * 10), "not bencode"),
        ("A" * (base64_length(CAP) + 4), f"over {CAP} bytes"),
    ],
)
def test_what_is_no_usable_torrent_file_is_invalid_torrent_saying_why(text, words):
    with pytest.raises(InvalidCommand) as info:
        parse_torrent(text, CAP)
    assert info.value.reason == "invalid_torrent"
    assert words in info.value.detail


def test_the_cap_counts_the_decoded_file_not_the_body():
    data = fastbencode.bencode({b"info": {b"name": b"x", b"pieces": b"\x00" * 20}})
    assert parse_torrent(b64(data), len(data)).infohash_v1 is not None
    for cap in (len(data) - 1, len(data) - 3):  # within base64's rounding, and past it
        with pytest.raises(InvalidCommand, match=f"over {cap} bytes"):
            parse_torrent(b64(data), cap)
