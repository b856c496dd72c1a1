from __future__ import annotations

import pytest

from qbit_consumer.contract.magnet import parse_magnet
from qbit_consumer.errors import InvalidCommand

V1 = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
V2 = "32bcc50c8f5385308227700e85b55929100c875f76ea37a65c595ad930391ac4"


def test_hex_btih_is_lowercased_and_is_both_hash_and_only_key():
    magnet = parse_magnet(f"magnet:?xt=urn:btih:{V1.upper()}&dn=x")
    assert magnet.hash == V1
    assert magnet.keys == (V1,)
    assert magnet.infohash_v2 is None


def test_base32_btih_decodes_to_hex_as_in_the_qbittorrent_wiki():
    magnet = parse_magnet("magnet:?xt=urn:btih:WRN7ZT6NKMA6SSXYKAFRUGDDIFJUNKI2")
    assert magnet.hash == "b45bfccfcd5301e94af8500b1a1863415346a91a"
    assert parse_magnet("magnet:?xt=urn:btih:wrn7zt6nkma6ssxykafrugddifjunki2").hash == magnet.hash


def test_hybrid_magnet_hash_is_v1_but_qbittorrent_lists_it_under_truncated_v2():
    # The example of qBittorrent issue 16662.
    magnet = parse_magnet(
        f"magnet:?xt=urn:btih:b5f4a7c1a3ada361c59469d90c79d76f5ef07fcd&xt=urn:btmh:1220{V2}"
    )
    assert magnet.hash == "b5f4a7c1a3ada361c59469d90c79d76f5ef07fcd"
    assert magnet.infohash_v2 == V2
    # The hash first: it is what a v1 listing finds; then the v2 id qBittorrent lists it under.
    assert magnet.keys == (magnet.hash, V2, "32bcc50c8f5385308227700e85b55929100c875f")


def test_v2_only_magnet_hash_is_v2_truncated_to_40_hex():
    magnet = parse_magnet(f"magnet:?xt=urn:btmh:1220{V2}")
    assert magnet.hash == V2[:40]
    assert magnet.keys == (V2, V2[:40])
    assert magnet.infohash_v1 is None


@pytest.mark.parametrize(
    "uri",
    [
        f"magnet:?xt.1=urn:btih:{V1}&xt.2=urn:btmh:1220{V2}",
        f"magnet:?xt=urn%3Abtih%3A{V1}&xt=urn%3abtmh%3a1220{V2}",
        f"MAGNET:?XT=urn:BTIH:{V1}&xt=urn:btmh:1220{V2}",
        f"magnet:?dn=a&xt=urn:sha1:XYZ&xt=urn:btih:{V1}&&xt=urn:btmh:1220{V2}&tr=udp%3A%2F%2Ft%3A1",
        f"magnet:?xt=urn:btih:{V1}&xt=urn:btih:{V1}&xt=urn:btmh:1220{V2}",
    ],
)
def test_indexed_encoded_and_repeated_xt_parameters_are_understood(uri):
    magnet = parse_magnet(uri)
    assert (magnet.infohash_v1, magnet.infohash_v2) == (V1, V2)


def test_display_name_is_decoded_like_libtorrent_does():
    assert (
        parse_magnet(f"magnet:?xt=urn:btih:{V1}&dn=Big+Buck%20Bunny%2B").display_name
        == "Big Buck Bunny+"
    )
    assert parse_magnet(f"magnet:?xt=urn:btih:{V1}").display_name is None


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("http://example.com/a.torrent", "a URL of scheme 'http'"),
        ("/etc/passwd", "not a URI"),
        ("magnet:?dn=only-a-name", "no xt=urn:btih:"),
        ("magnet:?xt=urn:btih:1234", "neither 40 hex nor 32 base32"),
        ("magnet:?xt=urn:btih:" + "z" * 40, "neither 40 hex"),
        ("magnet:?xt=urn:btih:" + "1" * 32, "neither 40 hex"),  # '1' is not base32
        ("magnet:?xt=urn:btmh:" + "a" * 68, "SHA-256 multihash"),
        ("magnet:?xt=urn:btmh:1220" + "a" * 63, "SHA-256 multihash"),
        (f"magnet:?xt=urn:btih:{V1}&xt=urn:btih:{'0' * 40}", "two different btih"),
        (f"magnet:?xt=urn:btih:{V1}\nhttp://evil/x.torrent", "whitespace or control"),
        (f"magnet:?xt=urn:btih:{V1} &dn=x", "whitespace or control"),
        ("magnet:?xt=urn:btih:" + "0" * 40, "all zeros"),
        ("magnet:?xt=urn:btih:" + "A" * 32, "all zeros"),  # base32 of 20 zero bytes
        ("magnet:?xt=urn:btmh:1220" + "0" * 64, "all zeros"),
    ],
)
def test_bad_magnets_are_refused_with_a_reason(uri, words):
    with pytest.raises(InvalidCommand) as info:
        parse_magnet(uri)
    assert info.value.reason == "invalid_magnet"
    assert words in info.value.detail
