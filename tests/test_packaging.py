"""What the Docker image relies on, checked without a Docker engine (none on these machines)."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from qbit_consumer import __version__
from qbit_consumer.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_entry_point_and_healthcheck_are_real_commands(capsys):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["qbit-consumer"]' in dockerfile
    assert "USER 10001:10001" in dockerfile and 'VOLUME ["/data"]' in dockerfile
    healthcheck = re.search(
        r'CMD \["qbit-consumer", "healthcheck", "--config", "([^"]+)"\]', dockerfile
    )
    assert healthcheck, "HEALTHCHECK must run `qbit-consumer healthcheck`"
    # `qbit-consumer` is the installed console script, and main has both subcommands.
    [script] = entry_points(group="console_scripts", name="qbit-consumer")
    assert script.load() is main
    for sub in ("run", "healthcheck"):
        with pytest.raises(SystemExit) as exited:
            main([sub, "--help"])
        assert exited.value.code == 0 and "--config" in capsys.readouterr().out


def test_the_images_version_label_defaults_to_the_packages_version():
    """`make image` passes the version; a plain `docker build .` (compose's `build: .`) takes
    the Dockerfile's default, which must not fall behind."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG VERSION={__version__}\n" in dockerfile
