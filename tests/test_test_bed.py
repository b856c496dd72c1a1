"""The test bed's own promises: qBittorrent 5.x fetched once and cached, or one clear line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import qbt_versions
from tests.fixtures.qbittorrent import FETCH_SCRIPT, VERSIONS, qbittorrent_binary


def fetch(version: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FETCH_SCRIPT), version],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QBIT_CONSUMER_CACHE": str(tmp_path / "cache"), **env},
        check=False,
    )


def test_every_version_of_the_bed_runs_and_says_its_version():
    for version in VERSIONS:
        said = subprocess.run(
            [qbittorrent_binary(version), "--version"], capture_output=True, text=True, check=True
        )
        assert said.stdout.split()[-1] == f"v{version}"


def test_a_cached_build_is_found_again_without_the_network(tmp_path):
    cache = Path(qbittorrent_binary("5.3.0")).parents[2]
    again = fetch(
        "5.3.0",
        tmp_path,
        QBIT_CONSUMER_CACHE=str(cache),
        QBIT_CONSUMER_DEBIAN_MIRROR="http://127.0.0.1:9/debian",
    )
    assert again.returncode == 0 and again.stdout.strip() == qbittorrent_binary("5.3.0")


def test_an_unreachable_mirror_is_one_line_naming_it(tmp_path):
    # apt would try the refused connection again, for seconds, before the same line.
    no_retries = tmp_path / "apt.conf"
    no_retries.write_text('Acquire::Retries "0";\n')
    failed = fetch(
        "5.3.0",
        tmp_path,
        QBIT_CONSUMER_DEBIAN_MIRROR="http://127.0.0.1:9/debian",
        APT_CONFIG=str(no_retries),
    )
    assert failed.returncode == 1 and failed.stdout == ""
    [line] = failed.stderr.splitlines()
    assert line.startswith("missing: Debian's trixie trixie-backports package lists from ")
    assert "http://127.0.0.1:9/debian" in line
    assert not (tmp_path / "cache" / "qbittorrent-5.3.0").exists()  # nothing half-made is kept


def test_an_unknown_version_is_one_line_listing_the_known_ones(tmp_path):
    failed = fetch("6.0.0", tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        "missing: no recipe for qBittorrent 6.0.0 (known: 5.3.0, 5.1.0; 4.5.2 is Debian "
        "bookworm's own)"
    ]
    # The test bed's --qbt (what `pytest --qbt 6.0.0` is checked with before any test runs).
    asked = SimpleNamespace(getoption=lambda name: "6.0.0")
    with pytest.raises(pytest.UsageError, match=r"unknown qBittorrent version\(s\) \['6.0.0'\]"):
        qbt_versions(asked)
