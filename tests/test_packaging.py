"""What the Docker image relies on, checked without a Docker engine (none on these machines)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_entry_point_and_healthcheck_are_real_commands():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["qbit-consumer"]' in dockerfile
    assert "USER qbit" in dockerfile and 'VOLUME ["/data"]' in dockerfile
    healthcheck = re.search(
        r'CMD \["qbit-consumer", "healthcheck", "--config", "([^"]+)"\]', dockerfile
    )
    assert healthcheck, "HEALTHCHECK must run `qbit-consumer healthcheck`"
    # The same subcommands exist in the installed console script.
    for sub in ("run", "healthcheck"):
        result = subprocess.run(
            [sys.executable, "-m", "qbit_consumer", sub, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and "--config" in result.stdout


def test_compose_example_passes_secrets_through_the_environment():
    compose = (ROOT / "docker-compose.example.yml").read_text()
    assert "QBIT_CONSUMER_QBITTORRENT_PASSWORD" in compose
    assert "/config/config.ini:ro" in compose and ":/data" in compose
