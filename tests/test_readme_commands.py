"""The README's commands as a person types them: `make demo` and `make run`, real processes
started from the repository root.

Nothing else runs scripts/demo.py, and the demo drives the code from outside: when a function it
called changed its signature, the README's first command died at once and no test noticed.
These tests run the commands whole, Makefile included, each against the run's own RabbitMQ vhost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.rabbitmq import rabbitmqctl, vhost_of, wait_until
from tests.fixtures.service import magnet_for, random_hash, service_ini

if TYPE_CHECKING:  # TestNames imported for real would be collected as a test class
    from tests.fixtures.qbittorrent import QbitProcess
    from tests.fixtures.rabbitmq import BrokerHelper, EventCollector
    from tests.fixtures.service import TestNames

ROOT = Path(__file__).resolve().parents[1]
#: The demo's download takes about 15 s by design; past this it is broken, not slow.
DEMO_SECONDS = 90
#: What a make run by `make test` passes to its children: a person's shell has none of it, and
#: a make started with it would look for a jobserver it cannot reach.
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")


@contextlib.contextmanager
def make(
    *args: str, output: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``make ARGS`` in the repository root, in a process group of its own as a shell starts
    it, with ``env`` added to the environment and its output (both streams) in ``output``.
    Whatever of the group still runs on the way out gets Ctrl-C (on which the demo tears down
    what it started), then SIGKILL: a failed test leaves no service behind."""
    inherited = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
    with output.open("wb") as out:
        process = subprocess.Popen(
            ["make", *args],
            cwd=ROOT,
            env={**inherited, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def processes_mentioning(text: str) -> list[str]:
    """The running processes whose command line contains ``text``, as ``pid: command line``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            )
        except OSError:  # it exited while we looked
            continue
        if text in command:
            found.append(f"{entry.name}: {command}")
    return found


def vhost_contents(amqp_url: str) -> set[str]:
    """The queues and exchanges of ``amqp_url``'s vhost, from rabbitmqctl (the demo does not
    say which names it used, so what it left can only be found by looking at everything)."""
    vhost = vhost_of(amqp_url)
    listed = {
        kind: rabbitmqctl(f"list_{kind}", "-p", vhost, "name", "--silent")
        for kind in ("queues", "exchanges")
    }
    if vhost == "/" or None in listed.values():
        pytest.skip("no vhost of the test run's own that rabbitmqctl can list here")
    return {f"{kind}: {name}" for kind, text in listed.items() for name in (text or "").split("\n")}


@pytest.mark.live
@pytest.mark.timeout(DEMO_SECONDS + 60)
def test_make_demo_shows_one_download_from_command_to_completion_and_leaves_nothing_behind(
    amqp_url: str, tmp_path: Path
) -> None:
    before = vhost_contents(amqp_url)
    output = tmp_path / "make-demo.out"
    # TMPDIR: the demo's directory, and with it every process it starts, is found in tmp_path.
    with make(
        "demo",
        output=output,
        env={"QBIT_CONSUMER_DEMO_AMQP_URL": amqp_url, "TMPDIR": str(tmp_path)},
    ) as process:
        code = process.wait(DEMO_SECONDS)
    text = output.read_text()
    assert code == 0, text

    sending = re.search(
        r"==> sending: qbit-consumer send 'magnet:\?xt=urn:btih:[0-9a-f]{40}\.\.\.' "
        r"--category movies --request-id demo-1",
        text,
    )
    added = re.search(
        r"^ +\d\d:\d\d:\d\d added +Big-Buck-Bunny-demo +in \S+/nas/movies +\[movies\] +id=demo-1$",
        text,
        re.MULTILINE,
    )
    completed = re.search(
        r"^ +\d\d:\d\d:\d\d completed +Big-Buck-Bunny-demo +20\.0 MiB in "
        r"\S+/nas/movies/Big-Buck-Bunny-demo +\[movies\] +id=demo-1$",
        text,
        re.MULTILINE,
    )
    assert sending and added and completed, text
    assert sending.start() < added.start() < completed.start(), text

    assert processes_mentioning(f"{tmp_path}/") == []  # qbittorrent-nox, the service
    assert list(tmp_path.glob("qbit-consumer-demo-*")) == []
    assert vhost_contents(amqp_url) <= before


@pytest.mark.live
def test_make_run_with_a_config_file_takes_commands_polls_and_exits_0_on_sigterm(
    qbittorrent: QbitProcess,
    amqp_url: str,
    names: TestNames,
    broker: BrokerHelper,
    events: EventCollector,
    tmp_path: Path,
) -> None:
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        qbittorrent.url,
        qbittorrent.password,
        polling={"interval_seconds": 0.5},
        logging={"level": "DEBUG", "format": "text"},
    )
    output = tmp_path / "make-run.out"
    with make("run", f"CONFIG={config}", output=output) as process:
        # Logged once a poll found qBittorrent answering: the consumer waits for one.
        consuming = f"consuming commands from {names.command_queue!r}"
        wait_until(
            lambda: consuming in output.read_text() or process.poll() is not None,
            60,
            "the service to consume commands",
        )
        assert process.poll() is None, output.read_text()

        # No log line marks a finished poll: a poll is proven by what it publishes.
        infohash = random_hash()
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps(
                {"magnet": magnet_for(infohash), "category": "movies", "request_id": "make-run"}
            ).encode(),
        )
        events.wait_for("downloads.added", hash=infohash, request_id="make-run")
        events.wait_for("downloads.progress", hash=infohash)

        os.killpg(process.pid, signal.SIGTERM)  # to make and the service, as `kill -TERM -PGID`
        process.wait(10)  # raises past 10 s
    text = output.read_text()
    # make dies of the SIGTERM itself, so its exit code says nothing of the service's. What
    # does: make prints `make: *** [...] Error N` for a recipe that exited N != 0 (`Terminated`,
    # `Killed` for one a signal ended) and nothing for 0, and the service logs this line only
    # on its way to exit code 0.
    assert "make: ***" not in text, text
    assert "qbit-consumer stopped" in text, text
    assert processes_mentioning(str(config)) == []
