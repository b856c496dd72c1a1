"""The README's commands as a person types them: `make demo` and `make run`, real processes
started from the repository root, and every `qbit-consumer ...` line of "## Running it".

Nothing else runs scripts/demo.py, and the demo drives the code from outside: when a function it
called changed its signature, the README's first command died at once and no test noticed.
These tests run the commands whole, Makefile included, each against the run's own RabbitMQ vhost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torf

from tests.fixtures.rabbitmq import rabbitmqctl, vhost_of, wait_until
from tests.fixtures.seeder import write_random_files
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
        broker.add(names.command_exchange, magnet_for(infohash), request_id="make-run")
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


# -- "## Running it": every `qbit-consumer ...` line, as written ---------------------------

#: The lines of the README's "## Running it" block that the walk-through below runs, keyed as a
#: shell splits them (a trailing `# comment` dropped, spaces normalised), each with what it
#: must show. A line the README gains fails both tests below by name until it has its entry
#: here and its step in the walk-through: no README command goes untested.
RUN = "qbit-consumer run --config config.ini"
CHECK = "qbit-consumer check --config config.ini"
HEALTHCHECK = "qbit-consumer healthcheck --config config.ini"
STATUS = "qbit-consumer status --config config.ini"
SEND_MAGNET = "qbit-consumer send MAGNET --category movies"
SEND_TORRENT = "qbit-consumer send --torrent FILE --category tv"
SEND_REMOVE = "qbit-consumer send remove HASH --delete-files"
WATCH = "qbit-consumer watch"
DLQ_LIST = "qbit-consumer dlq list"
DLQ_REPLAY = "qbit-consumer dlq replay --all"
HISTORY_SINCE = "qbit-consumer history --since 7d"
HISTORY_HASH = "qbit-consumer history --hash HASH"
HISTORY_SUMMARY = "qbit-consumer history --summary --since 30d"
RECOVER = "qbit-consumer recover"
README_LINES = {
    RUN: "the service of the whole walk-through (started twice); exit 0 on SIGTERM and SIGINT",
    CHECK: "exit 0, a `RabbitMQ    ok` and a `qBittorrent ok` line",
    HEALTHCHECK: "`healthy` and exit 0 while the service runs, `unhealthy: ...` and 1 once stopped",
    STATUS: "exit 0 and the status once the service published one",
    SEND_MAGNET: "`sent downloads.add (message_id ...)`, then the download is added",
    SEND_TORRENT: "`sent downloads.add (message_id ...)`, then the torrent is added",
    SEND_REMOVE: "`sent downloads.remove (message_id ...)`, then removed by command, files too",
    WATCH: "a line for the download's events; exit 0 on SIGINT",
    DLQ_LIST: "the dead-lettered command with its reason; it stays in the queue",
    DLQ_REPLAY: "`1 command(s) moved back`, and the command is then carried out",
    HISTORY_SINCE: "every event kept: the download's steps and the failure",
    HISTORY_HASH: "the download's timeline, received to removed, with the time between steps",
    HISTORY_SUMMARY: "counts by kind and the failures by reason",
    RECOVER: "with the service stopped: the state file is fine, exit 0",
}
#: Lines the walk-through runs when the README shows them and skips when it does not (`status`
#: came to the README while this test was written: it passes with the README of either side).
OPTIONAL_LINES = frozenset({STATUS})
#: The README's placeholders, each a whole word of a line; the walk-through gives each a value.
PLACEHOLDERS = frozenset({"config.ini", "MAGNET", "FILE", "HASH"})


def readme_command_lines(readme: str) -> list[str]:
    """The `qbit-consumer ...` lines of the first ```sh block of "## Running it", as a shell
    splits them, without their comments (`pip install .` is not one of them)."""
    section = readme.partition("\n## Running it\n")[2].partition("\n## ")[0]
    block = re.search(r"^```sh\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert block, 'README.md has no "## Running it" section with a ```sh block'
    return [
        " ".join(shlex.split(line, comments=True))
        for line in block.group(1).splitlines()
        if line.startswith("qbit-consumer ")
    ]


def unknown_readme_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line not in README_LINES]


def test_every_qbit_consumer_line_of_running_it_has_a_step_in_the_walk_through() -> None:
    """Also without the services (``-m "not live"``): a line the README gains, or a line it
    changes, is named at once; so is a line of the table that the README no longer shows."""
    lines = readme_command_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(lines) == len(set(lines)), f"a line is shown twice: {lines}"
    unknown = unknown_readme_lines(lines)
    assert not unknown, (
        "README.md's '## Running it' shows command lines no test runs: "
        + "; ".join(f"`{line}`" for line in unknown)
        + ". Add each to README_LINES in tests/test_readme_commands.py, with a step in "
        "test_every_qbit_consumer_line_of_running_it_works_as_written"
    )
    gone = set(README_LINES) - set(lines) - OPTIONAL_LINES
    assert not gone, f"README_LINES has lines README.md no longer shows: {sorted(gone)}"


class ReadmeCommands:
    """Runs the README's lines as a person types them: the `qbit-consumer` that `pip install .`
    puts beside the interpreter, in the folder of the config file (where the lines without
    ``--config`` find ``config.ini``), each placeholder replaced by its value."""

    def __init__(self, lines: list[str], folder: Path, placeholders: dict[str, str]) -> None:
        assert set(placeholders) == PLACEHOLDERS, sorted(placeholders)
        self.lines = lines
        self.folder = folder
        self.placeholders = placeholders
        self.ran: set[str] = set()
        self.started: list[subprocess.Popen[bytes]] = []
        self.executable = Path(sys.executable).with_name("qbit-consumer")
        assert self.executable.exists(), f"no {self.executable}: `pip install .` makes it"
        # The config file is the whole config, as on a person's machine: none of ours from the
        # environment (QBIT_CONSUMER_<SECTION>_<KEY> would override it).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QBIT_CONSUMER_")}

    def shows(self, line: str) -> bool:
        return line in self.lines

    def argv(self, line: str) -> list[str]:
        assert line in self.lines, f"README.md does not show `{line}`"
        words = shlex.split(line)
        unknown = [w for w in words[1:] if w.isupper() and w not in self.placeholders]
        assert not unknown, f"`{line}`: no value for the placeholder(s) {unknown}"
        self.ran.add(line)
        return [str(self.executable), *(self.placeholders.get(w, w) for w in words[1:])]

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(line),
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def expect(self, line: str, pattern: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        """Run ``line``; it exits ``code`` and prints a line matching ``pattern``."""
        result = self.run(line)
        assert result.returncode == code and re.search(pattern, result.stdout, re.MULTILINE), (
            f"`{line}`: expected exit {code} and {pattern!r} in its output\n{shown(result)}"
        )
        return result

    def expect_within(
        self, seconds: float, line: str, pattern: str, code: int = 0
    ) -> subprocess.CompletedProcess[str]:
        """As ``expect``, for what the service does in its own time (a status, the health
        file, the history stream): ``line`` again until it does, up to ``seconds``."""
        last: list[subprocess.CompletedProcess[str]] = []

        def passes() -> bool:
            last[:] = [self.run(line)]
            return last[0].returncode == code and bool(
                re.search(pattern, last[0].stdout, re.MULTILINE)
            )

        try:
            wait_until(passes, seconds, f"`{line}` to exit {code} with {pattern!r}", 0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its last run:\n{shown(last[0])}") from None
        return last[0]

    def start(self, line: str, output: Path) -> subprocess.Popen[bytes]:
        """``line`` as a process that runs until it is stopped, its output in ``output``."""
        with output.open("ab") as out:
            process = subprocess.Popen(
                self.argv(line),
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def kill_leftovers(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def start_service(readme: ReadmeCommands, log: Path, queue: str) -> subprocess.Popen[bytes]:
    """The README's `run` line, returned once it consumes commands."""
    consuming = f"consuming commands from {queue!r}"
    before = log.read_text().count(consuming) if log.exists() else 0
    process = readme.start(RUN, log)
    wait_until(
        lambda: log.read_text().count(consuming) > before or process.poll() is not None,
        30,
        "the service to consume commands",
    )
    assert process.poll() is None, f"`{RUN}` exited {process.returncode}:\n{log.read_text()}"
    return process


def stop_service(process: subprocess.Popen[bytes], signum: int, log: Path) -> None:
    process.send_signal(signum)
    code = process.wait(20)  # raises past 20 s
    assert code == 0, f"`{RUN}` exited {code} on {signal.Signals(signum).name}:\n{log.read_text()}"
    assert log.read_text().rstrip().endswith("qbit-consumer stopped"), log.read_text()


def make_torrent_file(folder: Path) -> tuple[Path, str]:
    """A small .torrent file made with torf (as tests/fixtures/seeder.py makes its own), and
    its info-hash. Nobody seeds it: the test needs it added, not downloaded."""
    name = f"readme-tv-{secrets.token_hex(4)}"
    write_random_files(folder / name, {"episode.bin": 64 * 1024})
    torrent = torf.Torrent(
        path=folder / name, piece_size=2**14, created_by=None, creation_date=None
    )
    torrent.generate()
    path = folder / f"{name}.torrent"
    torrent.write(path)
    return path, str(torrent.infohash)


SENT = r"^sent {} \(message_id [0-9a-f-]{{36}}\)$"


@pytest.mark.live
def test_every_qbit_consumer_line_of_running_it_works_as_written(
    qbittorrent: QbitProcess,
    amqp_url: str,
    names: TestNames,
    broker: BrokerHelper,
    events: EventCollector,
    tmp_path: Path,
) -> None:
    """Each `qbit-consumer` line of "## Running it", run as a real process against a real
    service, in an order where each makes sense; a changed command, argument or entry point
    breaks this test before it breaks a reader.

    The README's `run` line is the service itself (started from the line, stopped by SIGTERM,
    started again, stopped by SIGINT) rather than a second `run` that refuses: that way the
    line a person types is proven to start a service that takes commands, publishes events and
    a status and exits 0, not only to parse its arguments. `recover` runs while it is stopped.
    """
    lines = readme_command_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    unknown = unknown_readme_lines(lines)
    assert not unknown, f"README.md shows lines this test does not know how to run: {unknown}"

    home = tmp_path / "home"
    home.mkdir()
    settings = {
        "service": {"status_interval_seconds": 1},
        "polling": {"interval_seconds": 0.5},
        "logging": {"format": "text", "level": "INFO"},
    }
    config = service_ini(
        home / "config.ini", amqp_url, names, qbittorrent.url, qbittorrent.password, **settings
    )
    config.chmod(0o600)  # as the service's warning asks: the file holds a password
    infohash = random_hash()
    name = f"readme-{infohash[:8]}"
    torrent_file, torrent_hash = make_torrent_file(tmp_path)
    readme = ReadmeCommands(
        lines,
        home,
        {
            "config.ini": str(config),
            "MAGNET": magnet_for(infohash, name),
            "FILE": str(torrent_file),
            "HASH": infohash,  # the download `send MAGNET` adds
        },
    )
    log = tmp_path / "service.log"
    dead_hash = random_hash()
    try:
        service = start_service(readme, log, names.command_queue)

        checked = readme.expect(CHECK, r"^RabbitMQ    ok ")
        assert re.search(r"^qBittorrent ok ", checked.stdout, re.MULTILINE), shown(checked)
        readme.expect_within(10, HEALTHCHECK, r"^healthy$")
        if readme.shows(STATUS):
            readme.expect_within(10, STATUS, r"^  tracked: 0 downloads")

        watch_output = tmp_path / "watch.out"
        watcher = readme.start(WATCH, watch_output)

        readme.expect(SEND_MAGNET, SENT.format(r"downloads\.add"))
        assert events.wait_for("downloads.added", hash=infohash)[0]["category"] == "movies"
        readme.expect(SEND_TORRENT, SENT.format(r"downloads\.add"))
        assert events.wait_for("downloads.added", hash=torrent_hash)[0]["category"] == "tv"

        # Bound a moment after it started: a download is polled (and its progress published)
        # every half second, so the watcher sees it whether or not it caught its `added`.
        event_line = re.compile(rf"^\d\d:\d\d:\d\d (received|added|progress) +{name} ", re.M)
        wait_until(
            lambda: event_line.search(watch_output.read_text()) or watcher.poll() is not None,
            15,
            f"`{WATCH}` to print a line for {name}",
        )
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0, watch_output.read_text()
        assert event_line.search(watch_output.read_text()), watch_output.read_text()

        readme.expect(SEND_REMOVE, SENT.format(r"downloads\.remove"))
        removed = events.wait_for("downloads.removed", hash=infohash)[0]
        assert (removed["reason"], removed["files_deleted"]) == ("command", True), removed

        # Something for the dead-letter queue, as another service would send it: a category
        # this config does not have (the walk-through adds it before the replay).
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps({"magnet": magnet_for(dead_hash), "category": "anime"}).encode(),
            message_id="readme-dead",
        )
        wait_until(lambda: broker.message_count(names.dead_letter_queue) == 1, 15, "a dead letter")
        readme.expect(DLQ_LIST, r"^#1  \S+  invalid_category  attempts=\d+  id=readme-dead$")
        assert broker.message_count(names.dead_letter_queue) == 1

        everything = readme.expect_within(
            10, HISTORY_SINCE, rf" removed +{name} .*by command, files deleted"
        ).stdout
        for kind, who in [("received", name), ("added", name), ("added", torrent_file.stem)]:
            assert re.search(rf" {kind} +{who} ", everything), everything
        assert re.search(r" failed +.*invalid_category: ", everything), everything

        timeline = readme.expect(HISTORY_HASH, rf" removed +{name} ").stdout.splitlines()
        # `date time [+gap] kind name ...`: the first step has no gap, each later one has.
        steps = [re.match(r"\S+ \S+ +(\+\S+)? +(\w+) ", line) for line in timeline]
        assert all(steps), timeline
        kinds = [step[2] for step in steps if step]
        assert kinds[:2] == ["received", "added"] and kinds[-1] == "removed", timeline
        assert [bool(step[1]) for step in steps if step] == [False] + [True] * (len(steps) - 1)

        summary = readme.expect(HISTORY_SUMMARY, r"^events by kind$").stdout
        assert re.search(r"^  received +\d+$", summary, re.MULTILINE), summary
        assert re.search(r"^failures by reason\n  invalid_category +1$", summary, re.M), summary

        stop_service(service, signal.SIGTERM, log)
        readme.expect(HEALTHCHECK, r"^unhealthy: ", code=1)
        readme.expect(RECOVER, r"state\.sqlite3 is fine: nothing to recover$")

        # The cause fixed (the category added) and the service started again: replay.
        service_ini(
            config,
            amqp_url,
            names,
            qbittorrent.url,
            qbittorrent.password,
            **settings,
            categories={"movies": "", "tv": "", "anime": ""},
        )
        service = start_service(readme, log, names.command_queue)
        readme.expect(
            DLQ_REPLAY, rf"^1 command\(s\) moved back to {re.escape(names.command_queue)}$"
        )
        assert events.wait_for("downloads.added", hash=dead_hash)[0]["category"] == "anime"
        assert broker.message_count(names.dead_letter_queue) == 0
        stop_service(service, signal.SIGINT, log)
    finally:
        readme.kill_leftovers()
        # Tidying the shared qBittorrent must not hide why the test failed.
        with contextlib.suppress(Exception):
            qbittorrent.client().torrents_delete(
                delete_files=True, torrent_hashes=[torrent_hash, dead_hash]
            )

    assert readme.ran == set(lines), (
        f"lines the walk-through did not run: {set(lines) - readme.ran}"
    )
