"""`make demo`: watch qbit-consumer carry one download from command to completion, on loopback.

Stands up (and afterwards tears down) everything it needs:

* RabbitMQ: the one at QBIT_CONSUMER_DEMO_AMQP_URL (default
  amqp://guest:guest@127.0.0.1:5672/%2F, the local broker as Debian installs it). When that
  default is asked for and nothing listens there, a throwaway node in a temporary directory;
  another URL must already answer (the tests pass a vhost of their own, so that the demo's run
  touches nothing else). Exchanges, queues and streams get demo-only names and are deleted at
  the end;
* two qbittorrent-nox: a seeder with 20 MiB of generated data, and the "NAS" one the service
  manages (its download speed limited to 4 MiB/s, so the progress bar has time to move);
* the service itself, as a real `qbit-consumer run` process.

Then it sends one command with `qbit-consumer send`, run as the real command (the line it prints
is the one it runs), and prints every event as it arrives.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qbit_consumer.cli import ops  # noqa: E402
from qbit_consumer.config import load_config  # noqa: E402
from qbit_consumer.redact import redact_url  # noqa: E402
from tests.fixtures.qbittorrent import QbitProcess  # noqa: E402
from tests.fixtures.rabbitmq import BrokerHelper  # noqa: E402
from tests.fixtures.seeder import Seeder  # noqa: E402
from tests.fixtures.service import TestNames, service_ini  # noqa: E402

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
AMQP_URL = os.environ.get("QBIT_CONSUMER_DEMO_AMQP_URL") or DEFAULT_AMQP_URL


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", flush=True)


def broker_runs(url: str) -> bool:
    """Whether something listens at ``url``'s host and port."""
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname or "127.0.0.1", parts.port or 5672)) == 0


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
        while not broker_runs(DEFAULT_AMQP_URL):
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
        if broker_runs(AMQP_URL):
            say(f"RabbitMQ: using {redact_url(AMQP_URL)} (demo-only exchange and queue names)")
        elif AMQP_URL == DEFAULT_AMQP_URL:
            say("RabbitMQ: none running, starting a throwaway node")
            rabbit.start()
        else:
            sys.exit(
                f"demo: nothing answers at {redact_url(AMQP_URL)} (QBIT_CONSUMER_DEMO_AMQP_URL)"
            )
        say("qBittorrent: starting a seeder and the 'NAS' instance on loopback")
        seeder_qb, nas_qb = QbitProcess(tmp, "seeder"), QbitProcess(tmp, "nas")
        seeder_qb.start()
        nas_qb.start()
        nas_qb.client().app_set_preferences({"dl_limit": 4 * 2**20})
        payload = Seeder(seeder_qb).share(20 * 2**20, name="Big-Buck-Bunny-demo")

        # The tests' own config helper: every queue, exchange and stream gets the demo's name
        # (the defaults may be a real service's), and a name the service gains later follows.
        config = service_ini(
            tmp / "config.ini",
            AMQP_URL,
            names,
            nas_qb.url,
            nas_qb.password,
            polling={"interval_seconds": 0.5},
            categories={"movies": tmp / "nas" / "movies", "tv": ""},
            logging={"format": "text", "level": "INFO"},
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

        magnet = payload.magnet
        command = ["send", magnet, "--category", "movies", "--request-id", "demo-1"]
        # The line shown is the command run, its magnet cut after the info-hash.
        shown = shlex.join(["qbit-consumer", *command]).replace(magnet, f"{magnet[:60]}...")
        say(f"sending: {shown}")
        sent = subprocess.run(
            [sys.executable, "-m", "qbit_consumer", *command, "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if sent.returncode != 0:
            sys.exit(f"demo: `qbit-consumer send` failed: {(sent.stderr or sent.stdout).strip()}")
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
            try:
                service.wait(15)
            except subprocess.TimeoutExpired:  # the rest must still be torn down
                service.kill()
                service.wait()
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
