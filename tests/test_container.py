"""The image as a self-hoster runs it: built from the Dockerfile, run by the machine's container
engine against the real RabbitMQ and qBittorrent of the test bed (CONTRACT section 11).

Each test starts containers of the image built from the work tree (``tests/fixtures/container``),
with host networking so that they reach the test bed's services on loopback, a config mounted
read-only at /config, and a host folder (or a named volume) at /data.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from qbit_consumer import __version__
from tests.fixtures.container import (
    IMAGE_UID,
    ROOT,
    Container,
    Containers,
    build_image,
    config_dir,
    container_engine,
    data_dir,
    mounts,
    tracked_library,
)
from tests.fixtures.faults import HttpFaultProxy, TcpProxy
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.seeder import wait_complete
from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.image

#: The limit of docker-compose.example.yml.
MEMORY_LIMIT = 128 * 2**20


@pytest.fixture(scope="session")
def image() -> tuple[str, str]:
    """(engine, image): the image built from the work tree, once per test process."""
    engine = container_engine()
    return engine, build_image(engine)


@pytest.fixture
def containers(image: tuple[str, str]) -> Iterator[Containers]:
    made = Containers(*image)
    yield made
    made.remove_all()


def started(container: Container, timeout: float = 30) -> Container:
    container.wait_for_log("consuming commands", timeout)
    return container


def test_make_image_builds_the_image_with_its_labels_healthcheck_and_user(image):
    engine, _ = image
    result = subprocess.run(
        ["make", "image"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"built qbit-consumer:{__version__} with {engine}: " in result.stdout

    inspected = subprocess.run(
        [engine, "image", "inspect", "qbit-consumer:latest"],
        capture_output=True,
        text=True,
        check=True,
    )
    whole = json.loads(inspected.stdout)[0]
    config = whole["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.title"] == "qbit-consumer"
    assert "org.opencontainers.image.source" in labels
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    healthcheck = config.get("Healthcheck") or whole["Healthcheck"]  # docker's place, podman's
    assert healthcheck["Test"] == [
        "CMD",
        "qbit-consumer",
        "healthcheck",
        "--config",
        "/config/config.ini",
    ]
    assert config["Entrypoint"] == ["qbit-consumer"]


@pytest.mark.live
def test_a_command_to_the_container_is_added_downloaded_and_completed(
    containers, qbittorrent, seeder, amqp_url, names, broker, events, tmp_path
):
    config = config_dir(tmp_path, amqp_url, names, qbittorrent.url, qbittorrent.password)
    container = started(containers.new().run(*mounts(config, data_dir(tmp_path))))
    payload = seeder.share()

    broker.add(names.command_exchange, payload.magnet, request_id="in-a-container")

    [added] = events.wait_for("downloads.added", hash=payload.infohash)
    assert added["request_id"] == "in-a-container"
    [completed] = events.wait_for("downloads.completed", hash=payload.infohash, timeout=60)
    assert completed["size"] == payload.size
    assert container.healthcheck() == (0, "healthy")
    assert (tmp_path / "data" / "qbit-consumer.sqlite3").stat().st_uid == IMAGE_UID


@pytest.mark.live
def test_stop_exits_0_within_10_s_and_a_new_container_reports_the_completion_it_missed_once(
    containers, qbit_factory, seeder, amqp_url, names, broker, events, tmp_path
):
    leecher = qbit_factory("slow")
    leecher.client().app_set_preferences({"dl_limit": 2**19})  # 8 MiB take ~16 s
    config = config_dir(
        tmp_path, amqp_url, names, leecher.url, leecher.password, polling={"interval_seconds": 1}
    )
    data = data_dir(tmp_path)
    first = started(containers.new().run(*mounts(config, data)))
    payload = seeder.share(8 * 2**20)
    broker.add(names.command_exchange, payload.magnet, request_id="across-containers")
    wait_until(
        lambda: any(
            0 < e["progress"] < 1 for e in events.of("downloads.progress", hash=payload.infohash)
        ),
        60,
        "the download under way",
    )

    code, seconds = first.stop()
    assert code == 0 and seconds < 10, (code, seconds, first.logs())
    assert "qbit-consumer stopped" in first.logs()
    assert events.of("downloads.completed", hash=payload.infohash) == []
    wait_complete(leecher, payload.infohash)  # completes while no container runs

    started(containers.new().run(*mounts(config, data)))

    [completed] = events.wait_for("downloads.completed", hash=payload.infohash)
    assert completed["request_id"] == "across-containers"
    time.sleep(3)  # more poll cycles: none reports it again
    assert len(events.of("downloads.completed", hash=payload.infohash)) == 1


@pytest.mark.live
def test_a_read_only_root_filesystem_needs_only_data_writable(
    containers, qbittorrent, amqp_url, names, broker, events, tmp_path
):
    config = config_dir(tmp_path, amqp_url, names, qbittorrent.url, qbittorrent.password)
    container = started(containers.new().run("--read-only", *mounts(config, data_dir(tmp_path))))
    infohash = random_hash()

    broker.add(names.command_exchange, magnet_for(infohash), request_id="read-only")

    events.wait_for("downloads.added", hash=infohash)
    events.wait_for("downloads.progress", hash=infohash)
    assert container.healthcheck() == (0, "healthy")
    assert container.stop()[0] == 0
    assert "Read-only file system" not in container.logs()


@pytest.mark.live
def test_any_uid_runs_it_over_a_data_folder_of_its_own_or_a_new_named_volume(
    containers, qbittorrent, amqp_url, names, broker, events, tmp_path
):
    config = config_dir(tmp_path, amqp_url, names, qbittorrent.url, qbittorrent.password)
    own = started(
        containers.new().run("--user", "1000:1000", *mounts(config, data_dir(tmp_path, 1000)))
    )
    infohash = random_hash()
    broker.add(names.command_exchange, magnet_for(infohash), request_id="uid-1000")
    events.wait_for("downloads.added", hash=infohash)
    assert own.healthcheck() == (0, "healthy")
    assert (tmp_path / "data" / "qbit-consumer.sqlite3").stat().st_uid == 1000
    assert own.stop()[0] == 0

    volume = f"qbc-test-{secrets.token_hex(4)}"
    subprocess.run([own.engine, "volume", "create", volume], capture_output=True, check=True)
    try:
        fresh = started(containers.new().run("--user", "1234:1234", *mounts(config, volume)))
        assert fresh.healthcheck() == (0, "healthy")
        assert fresh.stop()[0] == 0
    finally:
        containers.remove_all()
        subprocess.run([own.engine, "volume", "rm", "-f", volume], capture_output=True)


@pytest.mark.live
def test_a_data_folder_the_uid_cannot_write_is_one_line_naming_the_folder_and_the_uid(
    containers, qbittorrent, amqp_url, names, tmp_path
):
    # Secrets in the environment: a config file with one would add a warning line.
    config = config_dir(tmp_path, "amqp://localhost/", names, qbittorrent.url, "")
    container = containers.new().run(
        "--user",
        "1000:1000",
        "-e",
        f"QBIT_CONSUMER_QBITTORRENT_PASSWORD={qbittorrent.password}",
        "-e",
        f"QBIT_CONSUMER_RABBITMQ_URL={amqp_url}",
        *mounts(config, data_dir(tmp_path, 0)),
    )

    assert container.exit_code() == 1
    assert container.logs().strip() == (
        "qbit-consumer: state error: /data is not writable by uid 1000 (gid 1000): it belongs "
        "to uid 0 (gid 0); chown it to 1000:1000"
    )


@pytest.mark.live
def test_as_the_compose_example_runs_it_secrets_from_files_never_show_in_inspect_or_logs(
    containers, qbittorrent, amqp_url, names, broker, events, tmp_path
):
    config = config_dir(tmp_path, amqp_url, names, qbittorrent.url, "")
    # A secret file as compose mounts one (`secrets: file:`): readable by the service's user only.
    secret = tmp_path / "qbittorrent_password"
    secret.write_text(qbittorrent.password + "\n")
    secret.chmod(0o600)
    os.chown(secret, 1000, 1000)
    # The compose example's settings together: its own uid, a read-only root with a tmpfs at
    # /tmp, the memory limit, the password from the secret file.
    container = started(
        containers.new().run(
            "--user",
            "1000:1000",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--memory",
            "128m",
            "-v",
            f"{secret}:/run/secrets/qbittorrent_password:ro",
            "-e",
            "QBIT_CONSUMER_QBITTORRENT_PASSWORD_FILE=/run/secrets/qbittorrent_password",
            "-e",
            "QBIT_CONSUMER_LOGGING_LEVEL=DEBUG",
            *mounts(config, data_dir(tmp_path, 1000)),
        )
    )
    infohash = random_hash()
    broker.add(names.command_exchange, magnet_for(infohash), request_id="secret-login")
    events.wait_for("downloads.added", hash=infohash)  # it logged in with the secret

    assert qbittorrent.password not in json.dumps(container.inspect())
    assert qbittorrent.password not in container.logs()
    assert container.healthcheck() == (0, "healthy")


@pytest.mark.live
def test_a_password_in_the_environment_shows_only_where_the_user_put_it(
    containers, qbittorrent, amqp_url, names, broker, events, tmp_path
):
    config = config_dir(tmp_path, amqp_url, names, qbittorrent.url, "")
    container = started(
        containers.new().run(
            "-e",
            f"QBIT_CONSUMER_QBITTORRENT_PASSWORD={qbittorrent.password}",
            "-e",
            "QBIT_CONSUMER_LOGGING_LEVEL=DEBUG",
            *mounts(config, data_dir(tmp_path)),
        )
    )
    infohash = random_hash()
    broker.add(names.command_exchange, magnet_for(infohash), request_id="env-login")
    events.wait_for("downloads.added", hash=infohash)

    assert qbittorrent.password not in container.logs()
    inspected = container.inspect()
    # Where the user put it: the environment, and the command line it was created with.
    assert any(qbittorrent.password in variable for variable in inspected["Config"]["Env"])
    del inspected["Config"]["Env"]
    inspected["Config"].pop("CreateCommand", None)
    assert qbittorrent.password not in json.dumps(inspected)


@pytest.mark.live
def test_healthcheck_in_the_container_goes_unhealthy_with_its_reason_when_rabbitmq_is_cut(
    containers, qbittorrent, amqp_url, names, tmp_path
):
    broker_port = int(amqp_url.split("@", 1)[1].split("/")[0].split(":")[1])
    proxy = TcpProxy("127.0.0.1", broker_port)
    through_proxy = amqp_url.replace(f":{broker_port}/", f":{proxy.port}/")
    config = config_dir(
        tmp_path,
        through_proxy,
        names,
        qbittorrent.url,
        qbittorrent.password,
        service={"unhealthy_after_seconds": 3},
    )
    try:
        container = started(containers.new().run(*mounts(config, data_dir(tmp_path))))
        assert container.healthcheck() == (0, "healthy")

        proxy.cut()
        time.sleep(6)  # past the limit, and a few health reports later
        code, line = container.healthcheck()
        assert code == 1
        assert line.startswith("unhealthy: RabbitMQ has been unreachable for "), line
        assert line.endswith("(longer than 3 s; both connections are down)"), line

        proxy.restore()
        wait_until(lambda: container.healthcheck() == (0, "healthy"), 30, "healthy again")
    finally:
        proxy.close()


@pytest.mark.live
def test_healthcheck_in_the_container_names_a_stuck_poller(
    containers, qbittorrent, amqp_url, names, broker, events, tmp_path
):
    proxy = HttpFaultProxy(qbittorrent.url)
    config = config_dir(
        tmp_path,
        amqp_url,
        names,
        proxy.url,
        qbittorrent.password,
        polling={"interval_seconds": 1},
        qbittorrent={"timeout_seconds": 1},
    )
    try:
        container = started(containers.new().run(*mounts(config, data_dir(tmp_path))))
        infohash = random_hash()
        broker.add(names.command_exchange, magnet_for(infohash), request_id="to-poll")
        events.wait_for("downloads.progress", hash=infohash)
        assert container.healthcheck() == (0, "healthy")

        # An answer that never ends: no read timeout fires, the poller's call never returns.
        proxy.trickle_paths.add("/api/v2/torrents/info")
        limit = 3 * 1 + 2 * (4 * 1 + 20)  # health.loop_limits for this config
        time.sleep(limit + 5)
        code, line = container.healthcheck()
        assert code == 1
        assert line.startswith("unhealthy: the poller thread has been stuck for "), line
    finally:
        proxy.close()


@pytest.mark.live
def test_10000_tracked_downloads_fit_in_the_compose_examples_128_mib(
    containers, qbit_factory, amqp_url, names, broker, tmp_path
):
    library = qbit_factory("library")
    data = data_dir(tmp_path)
    tracked_library(library, data, 10_000)
    config = config_dir(
        tmp_path,
        amqp_url,
        names,
        library.url,
        library.password,
        service={"status_interval_seconds": 5},
    )

    container = started(containers.new().run("--memory", "128m", *mounts(config, data)), timeout=60)
    samples = []
    end = time.monotonic() + 30  # six poll cycles of 10,000 progress events each
    while time.monotonic() < end:
        samples.append(container.memory())
        time.sleep(0.5)

    memory = container.memory()
    assert container.running() and memory.oom_kills == 0
    assert memory.limit == MEMORY_LIMIT
    peak_working_set = max(sample.working_set for sample in samples)
    print(
        f"container memory with 10,000 tracked (MiB): peak usage {memory.peak / 2**20:.1f}, "
        f"peak working set {peak_working_set / 2**20:.1f}, now {memory.usage / 2**20:.1f}"
    )
    assert peak_working_set < MEMORY_LIMIT * 0.75  # room left for a full listing
    assert container.healthcheck() == (0, "healthy")
    # It did track and poll them all meanwhile, as its own status says.
    [(_, body)] = broker.get_all(names.status_queue)
    status = json.loads(body)
    print(f"its downloads.status: {body.decode()}")
    assert status["tracked"] == {"total": 10_000, "active": 10_000}
    assert status["events"]["downloads.progress"] >= 3 * 10_000
    assert status["qbittorrent"]["reachable"] is True
