"""Shared fixtures: a real RabbitMQ vhost per run, real qbittorrent-nox instances, the service.

Nothing here is mocked: these fixtures are what the bridge is tested against.

Which qBittorrent: ``--qbt`` (or QBIT_CONSUMER_TEST_QBITTORRENT) lists versions, default
``5.3.0,5.1.0,4.5.2``. Every live test runs on the first; the tests marked ``compat`` run on
each. A test that uses qBittorrent carries its version in its id (``test_x[qbt5.3.0]``), so
``--qbt 4.5.2`` runs the whole live suite on 4.5.2 alone.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from qbit_consumer.config import Config
from tests.fixtures.qbittorrent import USERNAME, VERSIONS, QbitProcess
from tests.fixtures.rabbitmq import BrokerHelper, EventCollector, TestVhost, rabbitmqctl, vhost_of
from tests.fixtures.seeder import Seeder
from tests.fixtures.service import RunningService, TestNames, load, write_ini

logging.getLogger("pika").setLevel(logging.WARNING)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--qbt",
        default=os.environ.get("QBIT_CONSUMER_TEST_QBITTORRENT", ",".join(VERSIONS)),
        help="qBittorrent versions, comma-separated: the whole live suite runs on the first, "
        f"the tests marked compat on each (known: {', '.join(VERSIONS)})",
    )


def qbt_versions(config: pytest.Config) -> list[str]:
    versions = [v.strip() for v in str(config.getoption("--qbt")).split(",") if v.strip()]
    unknown = [v for v in versions if v not in VERSIONS]
    if not versions or unknown:
        raise pytest.UsageError(
            f"--qbt: unknown qBittorrent version(s) {unknown}; known: {', '.join(VERSIONS)}"
        )
    return versions


def pytest_configure(config: pytest.Config) -> None:
    qbt_versions(config)  # a bad --qbt stops the run at once, with one line


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "qbt_version" not in metafunc.fixturenames:
        return
    versions = qbt_versions(metafunc.config)
    if metafunc.definition.get_closest_marker("compat") is None:
        versions = versions[:1]
    metafunc.parametrize(
        "qbt_version", versions, indirect=True, scope="session", ids=[f"qbt{v}" for v in versions]
    )


#: The fixtures that start a real service or reach one: the run's RabbitMQ vhost (``broker``,
#: ``events``, ``make_config``, ``start_service`` and ``other_user`` all go through
#: ``amqp_url``) and the qbittorrent-nox instances. A test is marked ``live`` exactly when it
#: reaches one of them, directly or through another fixture.
LIVE_FIXTURES = frozenset({"amqp_url", "qbittorrent", "seeder", "qbit_factory"})


def live_mark_problem(item: pytest.Item) -> str | None:
    """What is wrong with ``item``'s ``live`` mark, or None."""
    reaches = sorted(LIVE_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    marked = item.get_closest_marker("live") is not None
    if reaches and not marked:
        return f"reaches {' and '.join(reaches)} but is not marked live: mark it live"
    if marked and not reaches:
        return f"is marked live but reaches none of {', '.join(sorted(LIVE_FIXTURES))}: unmark it"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m and -k deselect anything: every test is checked
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """A test whose ``live`` mark and fixtures disagree is a collection error, and nothing runs:
    ``-m "not live"`` must run no test that needs the services, and leave out none that does
    not. (A collection error, not a UsageError: pytest-xdist's workers would lose its text.)"""
    wrong = [(item, problem) for item in items if (problem := live_mark_problem(item))]
    for item, problem in wrong:
        session.ihook.pytest_collectreport(
            report=pytest.CollectReport(item.nodeid, "failed", f"{item.name} {problem}", [])
        )
    if wrong:
        items.clear()


@pytest.fixture(scope="session")
def qbt_version(request: pytest.FixtureRequest) -> str:
    """The qBittorrent version this test runs against (see the module's docstring)."""
    return str(request.param)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with TestVhost() as url:
        yield url


@pytest.fixture(scope="session")
def qbit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qbittorrent")


@pytest.fixture(scope="session")
def qbittorrent(qbit_root: Path, qbt_version: str) -> Iterator[QbitProcess]:
    """One qbittorrent-nox per version, shared by the tests that do not stop it (random
    info-hashes keep them apart)."""
    process = QbitProcess(qbit_root, f"shared-{qbt_version}", version=qbt_version)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def seeder(qbit_root: Path, request: pytest.FixtureRequest) -> Iterator[Seeder]:
    """A second qbittorrent-nox that seeds generated payloads on loopback to the others, of
    every version (it runs the first version asked for)."""
    version = qbt_versions(request.config)[0]
    process = QbitProcess(qbit_root, f"seeder-{version}", version=version)
    process.start()
    yield Seeder(process)
    process.stop()


@pytest.fixture
def qbit_factory(
    qbit_root: Path, qbt_version: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., QbitProcess]]:
    """Private qbittorrent-nox instances of the test's version, for tests that stop, restart
    or break one."""
    started: list[QbitProcess] = []

    def make(name: str = "private", **kwargs: Any) -> QbitProcess:
        kwargs.setdefault("version", qbt_version)
        process = QbitProcess(
            qbit_root, f"{request.node.name[:40]}-{qbt_version}-{name}-{len(started)}", **kwargs
        )
        process.start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.kill()


@pytest.fixture
def other_user(amqp_url: str) -> Iterator[str]:
    """The AMQP URL of a second RabbitMQ user on the test vhost (the service connects as the
    first): a command it publishes carries a ``user_id`` the service may not publish."""
    user, password = f"qbc-other-{secrets.token_hex(3)}", secrets.token_hex(8)
    if rabbitmqctl("add_user", user, password) is None:
        pytest.skip("rabbitmqctl cannot add a user here")
    try:
        rabbitmqctl("set_permissions", "-p", vhost_of(amqp_url), user, ".*", ".*", ".*")
        parts = urlsplit(amqp_url)
        yield parts._replace(
            netloc=f"{quote(user)}:{password}@{parts.hostname}:{parts.port}"
        ).geturl()
    finally:
        rabbitmqctl("delete_user", user)


@pytest.fixture
def names() -> TestNames:
    return TestNames()


@pytest.fixture
def broker(amqp_url: str, names: TestNames) -> Iterator[BrokerHelper]:
    helper = BrokerHelper(amqp_url)
    yield helper
    helper.delete(names.queues, names.exchanges)
    helper.close()


@pytest.fixture
def events(amqp_url: str, names: TestNames) -> Iterator[EventCollector]:
    collector = EventCollector(amqp_url, names.event_exchange)
    yield collector
    collector.close()


@pytest.fixture
def make_config(amqp_url: str, names: TestNames, tmp_path: Path) -> Callable[..., Config]:
    """A config for this test: its own names, the given qBittorrent, and any overrides."""

    def make(qbit: QbitProcess | None, **sections: dict[str, Any]) -> Config:
        values: dict[str, dict[str, Any]] = {
            # No status messages unless a test asks: they would join every event it collects.
            "service": {"status_interval_seconds": 0},
            "rabbitmq": {
                "url": amqp_url,
                "command_exchange": names.command_exchange,
                "command_queue": names.command_queue,
                "event_exchange": names.event_exchange,
                "status_queue": names.status_queue,
                "retry_delay_seconds": 1,
            },
            "qbittorrent": {
                "url": qbit.url if qbit else "http://127.0.0.1:9",
                "username": USERNAME,
                "password": qbit.password if qbit else "",
                "timeout_seconds": 5,
            },
            "categories": {"movies": "", "tv": "", "other": ""},
            "history": {"stream": names.history_stream},
            "state": {"path": tmp_path / "state.sqlite3"},
            "logging": {"format": "text", "level": "DEBUG"},
        }
        for section, overrides in sections.items():
            values.setdefault(section, {}).update(overrides)
        return load(write_ini(tmp_path / "config.ini", values))

    return make


@pytest.fixture
def start_service(broker: BrokerHelper) -> Iterator[Callable[[Config], RunningService]]:
    """Starts the service in-process; stops it before ``broker`` deletes the test's queues."""
    running: list[RunningService] = []

    def start(cfg: Config) -> RunningService:
        service = RunningService(cfg)
        running.append(service)
        return service

    yield start
    for service in running:
        service.stop()


# Hypothesis: a short run in `make test`, the long one (`make fuzz`) with HYPOTHESIS_PROFILE=long.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("default", max_examples=150)
_hypothesis_settings.register_profile("long", max_examples=10_000)
_hypothesis_settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "default"))
