"""What every benchmark needs: real services, the service as a process, /proc readings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qbit_consumer.broker import Broker, Outgoing
from tests.fixtures.qbittorrent import QbitProcess
from tests.fixtures.rabbitmq import BrokerHelper, EventCollector, wait_until
from tests.fixtures.service import TestNames, write_ini

TICK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]
#: The qBittorrent the benchmarks run by default: the version their goals were first measured
#: on, so that runs stay comparable. Another one writes a page of its own (``bench/run.py``).
DEFAULT_QBITTORRENT = "4.5.2"
QBITTORRENT_VERSION = os.environ.get("QBIT_CONSUMER_BENCH_QBITTORRENT", DEFAULT_QBITTORRENT)


def page_suffix(version: str) -> str:
    """'' for the default version, ``-qbittorrent-5.3.0`` for another: docs/benchmarks<suffix>.md."""
    return "" if version == DEFAULT_QBITTORRENT else f"-qbittorrent-{version}"


def qbittorrent(root: Path, name: str) -> QbitProcess:
    """A throwaway qbittorrent-nox of ``QBITTORRENT_VERSION`` (not started)."""
    return QbitProcess(root, name, version=QBITTORRENT_VERSION)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS since start) in MiB."""
    status = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def pid_of(process: QbitProcess) -> int:
    assert process._process is not None
    return process._process.pid


class ServiceProcess:
    """`qbit-consumer run` as a real process, with its own names on the broker."""

    def __init__(
        self, root: Path, amqp_url: str, qbit: QbitProcess, **sections: dict[str, Any]
    ) -> None:
        self.names = TestNames()
        self.root = root
        values: dict[str, dict[str, Any]] = {
            "rabbitmq": {
                "url": amqp_url,
                "command_exchange": self.names.command_exchange,
                "command_queue": self.names.command_queue,
                "event_exchange": self.names.event_exchange,
                "status_queue": self.names.status_queue,
            },
            "qbittorrent": {"url": qbit.url, "password": qbit.password},
            "categories": {"movies": "", "tv": ""},
            # A stream of its own: on a shared one, a service started without a state file
            # would rebuild what the earlier measurements tracked (as it should in real life).
            "history": {"stream": self.names.history_stream},
            "state": {"path": root / f"{self.names.command_queue}.sqlite3"},
            "logging": {"format": "text", "level": "WARNING"},
        }
        for section, overrides in sections.items():
            values.setdefault(section, {}).update(overrides)
        self.config = write_ini(root / f"{self.names.command_queue}.ini", values)
        self.amqp_url = values["rabbitmq"]["url"]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / f"{self.names.command_queue}.log"

    @property
    def state_path(self) -> Path:
        return self.root / f"{self.names.command_queue}.sqlite3"

    def start(
        self, events: bool = True, binding_keys: list[str] | None = None
    ) -> EventCollector | None:
        """Start the service; with ``events``, collect what it publishes for ``binding_keys``
        (default: everything)."""
        collector = (
            EventCollector(self.amqp_url, self.names.event_exchange, binding_keys or "#")
            if events
            else None
        )
        process = self.start_process()
        helper = BrokerHelper(self.amqp_url)
        try:
            wait_until(
                lambda: helper.exists(self.names.command_queue) or process.poll() is not None,
                30,
                "the service to declare its queue",
            )
        finally:
            helper.close()
        time.sleep(0.5)
        return collector

    def start_process(self) -> subprocess.Popen[bytes]:
        """Start the service and return at once."""
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "qbit_consumer", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        return self.process

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def cleanup(self) -> None:
        helper = BrokerHelper(self.amqp_url)
        helper.delete(self.names.queues, self.names.exchanges)
        helper.close()


def publish_commands(amqp_url: str, exchange: str, hashes: list[str], category: str = "tv") -> None:
    """Publish one command per hash the way a busy platform would: all of them sent, then one
    wait for the broker's confirms (a publish-and-wait client would itself be the bottleneck
    of a throughput benchmark)."""
    broker = Broker(amqp_url, role="benchmark platform")
    broker.connect()
    try:
        for infohash in hashes:
            body = json.dumps({"magnet": f"magnet:?xt=urn:btih:{infohash}", "category": category})
            outgoing = Outgoing(
                message_id=infohash, correlation_id=None, timestamp=0, persistent=True
            )
            broker.send(exchange, "downloads.add", body.encode(), outgoing)
        broker.settle()
    finally:
        broker.close()
