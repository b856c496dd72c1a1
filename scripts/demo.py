"""`make demo`: watch qbit-consumer carry one download from command to completion, on loopback.

Stands up (and afterwards tears down) everything it needs:

* RabbitMQ: the one on 127.0.0.1:5672 if it runs, else a throwaway node in a temporary
  directory; exchanges and queues get demo-only names and are deleted at the end;
* two qbittorrent-nox: a seeder with 20 MiB of generated data, and the "NAS" one the service
  manages (its download speed limited to 4 MiB/s, so the progress bar has time to move);
* the service itself, as a real `qbit-consumer run` process.

Then it sends one command with `qbit-consumer send` and prints every event as it arrives.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qbit_consumer.cli import ops  # noqa: E402
from qbit_consumer.config import load_config  # noqa: E402
from tests.fixtures.qbittorrent import QbitProcess  # noqa: E402
from tests.fixtures.rabbitmq import BrokerHelper  # noqa: E402
from tests.fixtures.seeder import Seeder  # noqa: E402
from tests.fixtures.service import TestNames, write_ini  # noqa: E402

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", flush=True)


def broker_runs() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 5672)) == 0


class ThrowawayRabbit:
    """A private RabbitMQ node (the recipe of the project's stack notes), started only when
    no broker listens on 5672."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "rabbitmq"
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": "qbcdemo@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": "5672",
            "RABBITMQ_DIST_PORT": "25699",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }
        self.started = False

    def start(self) -> None:
        if shutil.which("rabbitmq-server") is None:
            sys.exit(
                "demo: RabbitMQ is neither running nor installed (sudo apt-get install rabbitmq-server)"
            )
        self.dir.mkdir(parents=True)
        (self.dir / "rabbitmq.conf").write_text(
            "listeners.tcp.default = 127.0.0.1:5672\nloopback_users.guest = true\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "rabbitmq", "rabbitmq")
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=True)
            os.chmod(self.dir.parent, 0o755)
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.started = True
        deadline = time.monotonic() + 60
        while not broker_runs():
            if time.monotonic() > deadline:
                sys.exit(f"demo: the throwaway RabbitMQ did not start (logs in {self.dir / 'log'})")
            time.sleep(0.5)
        time.sleep(1)

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                ["rabbitmqctl", "-n", "qbcdemo@localhost", "stop"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )


def main() -> int:
    if shutil.which("qbittorrent-nox") is None:
        sys.exit(
            "demo: qbittorrent-nox is missing (run `make test` once as root, or sudo apt-get install qbittorrent-nox)"
        )
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="qbit-consumer-demo-"))
    os.chmod(tmp, 0o755)
    rabbit = ThrowawayRabbit(tmp)
    seeder_qb = nas_qb = service = None
    helper = None
    names = TestNames()
    try:
        if broker_runs():
            say("RabbitMQ: using the one on 127.0.0.1:5672 (demo-only exchange and queue names)")
        else:
            say("RabbitMQ: none running, starting a throwaway node")
            rabbit.start()
        say("qBittorrent: starting a seeder and the 'NAS' instance on loopback")
        seeder_qb, nas_qb = QbitProcess(tmp, "seeder"), QbitProcess(tmp, "nas")
        seeder_qb.start()
        nas_qb.start()
        nas_qb.client().app_set_preferences({"dl_limit": 4 * 2**20})
        payload = Seeder(seeder_qb).share(20 * 2**20, name="Big-Buck-Bunny-demo")

        config = write_ini(
            tmp / "config.ini",
            {
                "rabbitmq": {
                    "url": AMQP_URL,
                    "command_exchange": names.command_exchange,
                    "command_queue": names.command_queue,
                    "event_exchange": names.event_exchange,
                },
                "qbittorrent": {"url": nas_qb.url, "password": nas_qb.password},
                "polling": {"interval_seconds": 0.5},
                "categories": {"movies": tmp / "nas" / "movies", "tv": ""},
                "state": {"path": tmp / "state.sqlite3"},
                "logging": {"format": "text", "level": "INFO"},
            },
        )
        config.chmod(0o600)
        cfg = load_config(config, environ={})
        helper = BrokerHelper(AMQP_URL)
        say(
            f"qbit-consumer: starting `qbit-consumer run --config {config}` (log: {tmp / 'service.log'})"
        )
        with (tmp / "service.log").open("w") as log:
            service = subprocess.Popen(
                [sys.executable, "-m", "qbit_consumer", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        done = threading.Event()
        lines: list[str] = []

        class Printer:
            def write(self, text: str) -> None:
                if text.strip():
                    print("   " + text.rstrip(), flush=True)
                    lines.append(text)
                    if " completed " in text:
                        done.set()

            def flush(self) -> None:
                pass

        watcher = threading.Thread(
            target=ops.watch, args=(cfg, ["#"], Printer(), done.is_set), daemon=True
        )
        watcher.start()
        deadline = time.monotonic() + 30
        while not (helper.channel.is_open and helper.exists(names.command_queue)):
            if time.monotonic() > deadline or service.poll() is not None:
                sys.exit(f"demo: the service did not start; see {tmp / 'service.log'}")
            time.sleep(0.2)

        say(
            f"sending: qbit-consumer send '{payload.magnet[:60]}...' --category movies --request-id demo-1"
        )
        ops.send(cfg, payload.magnet, "movies", "demo-1", [])
        say("events on the exchange, as they arrive (`qbit-consumer watch` prints the same):")
        if not done.wait(90):
            sys.exit("demo: no completion within 90 s; see the service log")
        took = time.monotonic() - started
        say(
            f"completed: {payload.size // 2**20} MiB in {tmp / 'nas' / 'movies' / payload.name}, "
            f"{took:.1f} s after the demo started"
        )
        return 0
    finally:
        say("tearing everything down")
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            service.wait(15)
        if helper is not None:
            helper.delete(names.queues, names.exchanges)
            helper.close()
        for process in (nas_qb, seeder_qb):
            if process is not None:
                process.stop()
        rabbit.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
