"""Latency from qBittorrent's completion to our ``downloads.completed`` event, on real downloads.

A seeder and a leecher qbittorrent-nox on loopback, the service in-process polling the leecher
every ``--interval`` seconds. For each download a side observer polls the leecher's API every
50 ms and notes when the torrent first looks complete there (the earliest anyone can know);
the lag is the event's ``occurred_at`` minus that moment. qBittorrent's own ``completion_on`` is
reported too, for context (it has a resolution of one second).
Run: ``.venv/bin/python -m bench.completion_latency --downloads 5 --interval 1``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.common import qbittorrent
from qbit_consumer.config import load_config
from qbit_consumer.contract.events import read_rfc3339
from qbit_consumer.tracking.lifecycle import is_complete
from tests.fixtures.qbittorrent import service_client
from tests.fixtures.rabbitmq import BrokerHelper, EventCollector, TestVhost, connect, wait_until
from tests.fixtures.seeder import Seeder
from tests.fixtures.service import RunningService, TestNames, write_ini


def epoch(text: str) -> float:
    return read_rfc3339(text).timestamp()


def watch(
    url: str, password: str, infohash: str, seen: dict[str, float], stop: threading.Event
) -> None:
    client = service_client(url, password=password)
    while not stop.is_set():
        torrents = client.torrents([infohash])
        if torrents and is_complete(torrents[0]):
            seen[infohash] = time.time()
            return
        time.sleep(0.05)


def listen_completed(
    url: str,
    exchange: str,
    arrivals: dict[str, float],
    ready: threading.Event,
    stop: threading.Event,
) -> None:
    """A platform's consumer of `downloads.completed`: notes when each one arrives."""
    connection = connect(url)
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue, exchange, routing_key="downloads.completed")
    ready.set()
    for method, _properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=0.1):
        if method is not None:
            arrivals[json.loads(body)["hash"]] = time.time()
        if stop.is_set():
            break
    connection.close()


def measure(downloads: int = 5, interval: float = 1.0, size_mib: int = 4) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="qbc-latency-") as tmp, TestVhost() as amqp_url:
        root = Path(tmp)
        seeder_process, leecher = qbittorrent(root, "seeder"), qbittorrent(root, "leecher")
        seeder_process.start()
        leecher.start()
        names = TestNames()
        helper = BrokerHelper(amqp_url)
        events = EventCollector(amqp_url, names.event_exchange)
        cfg = load_config(
            write_ini(
                root / "c.ini",
                {
                    "rabbitmq": {
                        "url": amqp_url,
                        "command_exchange": names.command_exchange,
                        "command_queue": names.command_queue,
                        "event_exchange": names.event_exchange,
                    },
                    "qbittorrent": {"url": leecher.url, "password": leecher.password},
                    "polling": {"interval_seconds": interval},
                    "categories": {"movies": root / "dl"},
                    "state": {"path": root / "state.sqlite3"},
                    "logging": {"format": "text", "level": "WARNING"},
                },
            ),
            environ={},
        )
        arrivals: dict[str, float] = {}
        ready, done = threading.Event(), threading.Event()
        listener = threading.Thread(
            target=listen_completed,
            args=(amqp_url, names.event_exchange, arrivals, ready, done),
        )
        listener.start()
        ready.wait(10)
        service = RunningService(cfg)
        lags, noticed, vs_completion_on = [], [], []
        try:
            seeder = Seeder(seeder_process)
            for _ in range(downloads):
                payload = seeder.share(size_mib * 2**20)
                seen: dict[str, float] = {}
                stop = threading.Event()
                observer = threading.Thread(
                    target=watch, args=(leecher.url, leecher.password, payload.infohash, seen, stop)
                )
                observer.start()
                helper.publish(
                    names.command_exchange,
                    "downloads.add",
                    json.dumps({"magnet": payload.magnet, "category": "movies"}).encode(),
                )
                event = events.wait_for("downloads.completed", hash=payload.infohash, timeout=90)[0]
                # The observer's request may still be on its way (qBittorrent answers slowly while
                # it checks a new torrent's files): its first sight of the completion can come
                # after the event, which then counts as a lag of zero or less.
                wait_until(
                    lambda h=payload.infohash, s=seen: h in s, 10, "the observer's sight of it"
                )
                stop.set()
                observer.join()
                wait_until(lambda h=payload.infohash: h in arrivals, 10, "the completed event")
                lags.append(arrivals[payload.infohash] - seen[payload.infohash])
                noticed.append(epoch(event["occurred_at"]) - seen[payload.infohash])
                vs_completion_on.append(epoch(event["occurred_at"]) - epoch(event["completed_at"]))
        finally:
            service.stop()
            done.set()
            listener.join()
            events.close()
            helper.delete(names.queues, names.exchanges)
            helper.close()
            seeder_process.stop()
            leecher.stop()
    return {
        "downloads": downloads,
        "interval_seconds": interval,
        "median_s": statistics.median(lags),
        "max_s": max(lags),
        "lags_s": lags,
        "noticed_s": noticed,
        "vs_completion_on_s": vs_completion_on,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--size-mib", type=int, default=4)
    args = parser.parse_args()
    r = measure(args.downloads, args.interval, args.size_mib)
    print(f"interval {args.interval} s, {args.downloads} real downloads of {args.size_mib} MiB")
    print(
        "completed event's arrival after the torrent first looked complete in the API (s): "
        + ", ".join(f"{x:.2f}" for x in r["lags_s"])
    )
    print(f"  median {r['median_s']:.2f} s, max {r['max_s']:.2f} s")
    print("of which noticed by a poll after (s): " + ", ".join(f"{x:.2f}" for x in r["noticed_s"]))
    print(
        "lag after completion_on (1 s resolution, for context): "
        + ", ".join(f"{x:.2f}" for x in r["vs_completion_on_s"])
    )


if __name__ == "__main__":
    main()
