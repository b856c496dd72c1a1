"""docker-compose.example.yml: a valid Compose file, and what the docs promise about it.

The validator is Docker Compose v2 itself, as Debian builds it: `docker-compose config` checks the
file against the Compose Specification's JSON Schema (compose-go 2.4.8's, built into Debian
trixie's docker-compose 2.26.1-4), then loads it as `up` would (interpolation, sizes, references
between services, volumes and secrets). It needs no Docker engine. The .deb comes from Debian's
mirror (`QBIT_CONSUMER_DEBIAN_MIRROR` names another), is checked against the SHA-256 of Debian's
signed package index pinned below, and is cached outside the work tree under
`${QBIT_CONSUMER_CACHE:-~/.cache/qbit-consumer}`. Without it the tests fail with one line that
says what is missing.

The promises are checked on the model Compose resolved (long syntax, sizes in bytes, secrets by
target), so another spelling of the same promise (a secret file instead of a variable, `deploy`
limits instead of `mem_limit`, a `configs` entry instead of a bind mount) passes as well.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import secrets
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docker-compose.example.yml"

#: Debian trixie's docker-compose (Compose v2.26.1 on compose-go 2.4.8): the pool file of each
#: architecture and its SHA-256, as Debian's signed Packages index gives them.
COMPOSE_DEBIAN_VERSION = "2.26.1-4"
COMPOSE_DEBS = {
    "x86_64": (
        "pool/main/d/docker-compose/docker-compose_2.26.1-4_amd64.deb",
        "47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea",
    ),
    "aarch64": (
        "pool/main/d/docker-compose/docker-compose_2.26.1-4_arm64.deb",
        "bbafaa666f3e7fa00ad36f2a8bab889f1c791ca8743d674e7267a3d07203869c",
    ),
}
COMPOSE_MEMBER = "./usr/libexec/docker/cli-plugins/docker-compose"

MEMORY_LIMIT = 128 * 1024 * 1024  # the docs' 128m
SECRET_NAME = re.compile(r"(^|_)(PASSWORD|PASSWD|PASS|API_KEY|SECRET|TOKEN)(_|$)")
QBITTORRENT_CREDENTIALS = {
    f"QBIT_CONSUMER_QBITTORRENT_{key}{suffix}"
    for key in ("PASSWORD", "API_KEY")
    for suffix in ("", "_FILE")
}


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qbit-consumer"
    return Path(os.environ.get("QBIT_CONSUMER_CACHE") or default)


def debian_mirror() -> str:
    """The machine's own Debian mirror, as scripts/fetch-qbittorrent.sh finds it."""
    if mirror := os.environ.get("QBIT_CONSUMER_DEBIAN_MIRROR"):
        return mirror
    for sources, pattern in (
        ("/etc/apt/sources.list.d/debian.sources", r"^URIs:\s*(\S+)"),
        ("/etc/apt/sources.list", r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)"),
    ):
        try:
            found = re.search(pattern, Path(sources).read_text(), re.MULTILINE)
        except OSError:
            continue
        if found:
            return found.group(1)
    return "http://deb.debian.org/debian"


def runs(binary: Path) -> bool:
    try:
        done = subprocess.run(
            [binary, "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return False
    return done.returncode == 0 and COMPOSE_DEBIAN_VERSION in done.stdout


def data_tar(deb: bytes) -> bytes:
    """The data.tar.* member of a .deb (an ar archive)."""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    pos = 8
    while pos + 60 <= len(deb):
        name, size = deb[pos : pos + 16].decode().strip(), int(deb[pos + 48 : pos + 58])
        if name.startswith("data.tar"):
            return deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + size % 2
    raise ValueError("no data.tar member")


def download_compose(url: str, sha256: str) -> tuple[bytes | None, str]:
    """The docker-compose program in the .deb at ``url`` if its SHA-256 is ``sha256``, or None
    and what went wrong."""
    try:
        response = requests.get(url, timeout=120)
    except requests.RequestException as exc:
        return None, f"cannot download {url} ({type(exc).__name__})"
    if not response.ok:
        return None, f"{url} answered {response.status_code} {response.reason}"
    if (got := hashlib.sha256(response.content).hexdigest()) != sha256:
        return None, f"{url} has SHA-256 {got}, not the pinned {sha256}"
    try:
        with tarfile.open(fileobj=io.BytesIO(data_tar(response.content))) as tar:
            member = tar.extractfile(COMPOSE_MEMBER)
            if member is None:
                return None, f"{COMPOSE_MEMBER} in {url} is not a file"
            return member.read(), ""
    except (ValueError, KeyError, tarfile.TarError) as exc:
        return None, f"no {COMPOSE_MEMBER} in {url} ({exc})"


def fetch_compose() -> Path:
    """Debian's docker-compose binary, from the cache or fetched and checked once."""
    binary = cache_dir() / f"docker-compose-{COMPOSE_DEBIAN_VERSION}" / "docker-compose"
    if runs(binary):
        return binary
    machine = platform.machine()
    if machine not in COMPOSE_DEBS:
        pytest.fail(
            f"missing: a pinned Debian docker-compose {COMPOSE_DEBIAN_VERSION} for {machine} "
            f"(known: {', '.join(COMPOSE_DEBS)}; add its pool path and SHA-256 here)",
            pytrace=False,
        )
    pool, sha256 = COMPOSE_DEBS[machine]
    url = f"{debian_mirror().rstrip('/')}/{pool}"
    program, problem = download_compose(url, sha256)
    if program is None:  # failed outside the except blocks: one line, no chained tracebacks
        pytest.fail(
            f"missing: Debian's docker-compose {COMPOSE_DEBIAN_VERSION}: {problem}", pytrace=False
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: test processes side by side may fetch it at the same time.
    fd, partial = tempfile.mkstemp(dir=binary.parent, prefix=".docker-compose-")
    with os.fdopen(fd, "wb") as out:
        out.write(program)
    os.chmod(partial, 0o755)  # noqa: S103 - a program
    os.replace(partial, binary)
    if not runs(binary):
        pytest.fail(f"missing: {binary} (from {url}) does not run here", pytrace=False)
    return binary


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    return fetch_compose()


@pytest.fixture(scope="session")
def variables() -> dict[str, str]:
    """A random value for every variable the example interpolates (``${NAME...}``, ``$NAME``),
    standing for what the user puts in .env."""
    names = set(re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", EXAMPLE.read_text()))
    return {name: f"from-env-{name.lower()}-{secrets.token_hex(4)}" for name in names}


def compose(
    binary: Path, tmp: Path, variables: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.example.yml ARGS``, with none of the user's settings:
    no .env, no COMPOSE_* or DOCKER_* variables, an empty Docker config."""
    empty_env = tmp / "empty.env"
    empty_env.touch()
    (tmp / "docker").mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "DOCKER_CONFIG": str(tmp / "docker"),
        **variables,
    }
    return subprocess.run(
        [
            binary,
            *("--env-file", str(empty_env), "--project-name", "qbit-consumer-example"),
            *("--file", str(EXAMPLE), *args),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=60,
        check=False,
    )


def accepted(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        reason = " ".join(done.stderr.split())
        pytest.fail(f"docker-compose rejects the example: {reason}", pytrace=False)


@pytest.fixture(scope="module")
def model(
    compose_binary: Path, variables: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The example as Compose resolved it (``config --format json``)."""
    done = compose(
        compose_binary, tmp_path_factory.mktemp("compose"), variables, "config", "--format", "json"
    )
    accepted(done)
    return json.loads(done.stdout)


def our_service(model: dict[str, Any]) -> dict[str, Any]:
    """The qbit-consumer service: the one that builds this repository's image (or uses it)."""
    ours = [
        service
        for service in model["services"].values()
        if Path(str(service.get("build", {}).get("context", "/nonexistent"))) == ROOT
        or "qbit-consumer" in str(service.get("image", ""))
    ]
    assert len(ours) == 1, f"one service builds or runs the qbit-consumer image, not {len(ours)}"
    return ours[0]


def secret_targets(model: dict[str, Any], service: dict[str, Any]) -> set[str]:
    """Where the service's secrets are mounted, each from outside the compose file (a file, a
    variable of the environment, or an external secret)."""
    targets = set()
    for secret in service.get("secrets") or []:
        top = model.get("secrets", {})[secret["source"]]
        assert {"file", "environment", "external"} & top.keys(), (
            f"secret {secret['source']} must come from a file or the environment: {top}"
        )
        target = PurePosixPath(secret.get("target") or secret["source"])
        targets.add(str(target if target.is_absolute() else "/run/secrets" / target))
    return targets


def test_compose_example_is_a_valid_compose_file(
    compose_binary: Path, variables: dict[str, str], tmp_path: Path
):
    done = compose(compose_binary, tmp_path, variables, "config", "--quiet")
    accepted(done)


def test_compose_example_builds_the_image(model: dict[str, Any]):
    service = our_service(model)
    if "build" in service:
        assert (Path(service["build"]["context"]) / service["build"]["dockerfile"]).samefile(
            ROOT / "Dockerfile"
        )


def test_compose_example_passes_secrets_through_the_environment_or_secret_files(
    model: dict[str, Any], variables: dict[str, str]
):
    """No secret is written in the file: each comes from a variable of the environment (.env) or
    a secret file."""
    assert QBITTORRENT_CREDENTIALS & our_service(model).get("environment", {}).keys(), (
        f"qbit-consumer gets none of {sorted(QBITTORRENT_CREDENTIALS)}"
    )
    from_env = set(variables.values())
    for name, service in model["services"].items():
        mounted = secret_targets(model, service)
        for variable, value in (service.get("environment") or {}).items():
            value = str(value or "")
            where = f"services.{name}.environment.{variable}"
            if not value:
                continue  # empty, or passed through from the environment Compose runs in
            if SECRET_NAME.search(variable) and variable.endswith("_FILE"):
                assert value in mounted, f"{where}: {value} is none of its secrets {mounted}"
            elif SECRET_NAME.search(variable):
                assert value in from_env, f"{where} is written in the file, not taken from .env"
            elif "://" in value and (password := urlsplit(value).password):
                assert password in from_env, f"{where} has a password written in the file"


def test_compose_example_limits_memory_to_128m(model: dict[str, Any]):
    service = our_service(model)
    limits = [service.get("mem_limit")]
    limits.append(service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"))
    assert MEMORY_LIMIT in [int(limit) for limit in limits if limit is not None], limits


def test_compose_example_mounts_the_config_read_only_and_a_volume_at_data(model: dict[str, Any]):
    service = our_service(model)
    mounts = {volume["target"]: volume for volume in service.get("volumes") or []}
    configs = {
        config.get("target")
        for config in service.get("configs") or []
        if {"file", "external"} & model["configs"][config["source"]].keys()  # no inline content
    }
    config = mounts.get("/config/config.ini")
    assert "/config/config.ini" in configs or (config and config.get("read_only")), (
        "the config must be mounted read-only at /config/config.ini"
    )
    data = mounts.get("/data")
    assert data and data["type"] in {"volume", "bind"} and not data.get("read_only"), (
        "the state must live in a writable volume (or host folder) at /data"
    )
