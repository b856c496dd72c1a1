"""The service's process does not carry libraries it never uses (resident memory on a NAS:
asyncio 3.4 MB, charset_normalizer 2.7 MB, fastbencode 0.6 MB until the first .torrent).

Each check runs in a fresh interpreter: this one imported pika and requests with everything
they bring long before (the fixtures use them), which the lean modules rightly leave alone.
"""

from __future__ import annotations

import json
import subprocess
import sys

import fastbencode

LEFT_OUT = ["asyncio", "chardet", "charset_normalizer", "fastbencode"]


def fresh(code: str) -> object:
    """What ``code`` prints as JSON, run in a new interpreter with ``-W error``: a warning
    the lean modules should have silenced fails the check."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_service_starts_without_asyncio_a_charset_guesser_or_a_bencode_library():
    loaded = fresh(
        "import json, sys\n"
        "import qbit_consumer.cli.main, qbit_consumer.service\n"
        f"print(json.dumps([m for m in {LEFT_OUT!r} if sys.modules.get(m) is not None]))\n"
    )

    assert loaded == []


def test_the_first_torrent_file_brings_the_bencode_library_in():
    data = fastbencode.bencode({b"info": {b"name": b"x", b"piece length": 16384, b"pieces": b""}})

    found = fresh(
        "import base64, json, sys\n"
        "from qbit_consumer.contract.torrentfile import parse_torrent\n"
        f"parsed = parse_torrent(base64.b64encode({data!r}).decode(), 2**20)\n"
        "print(json.dumps([parsed.display_name, 'fastbencode' in sys.modules]))\n"
    )

    assert found == ["x", True]


def test_a_text_answer_that_names_no_charset_is_read_as_utf8_without_a_guesser():
    text = fresh(
        "import json\n"
        "import qbit_consumer.qbit, requests\n"
        "answer = requests.Response()\n"
        "answer._content = 'Ok. déjà vu ✓'.encode()\n"
        "answer.headers['Content-Type'] = 'text/plain'\n"
        "print(json.dumps([answer.text, requests.compat.chardet is None]))\n"
    )

    assert text == ["Ok. déjà vu ✓", True]


def test_a_process_that_imported_pika_and_requests_first_keeps_them_whole():
    kept = fresh(
        "import json, sys\n"
        "import pika, requests\n"
        "import qbit_consumer.broker, qbit_consumer.qbit\n"
        "adapter = sys.modules['pika.adapters.asyncio_connection']\n"
        "print(json.dumps([adapter.AsyncioConnection is not None, 'asyncio' in sys.modules,\n"
        "                  requests.compat.chardet is not None]))\n"
    )

    assert kept == [True, True, True]


def test_the_healthcheck_loads_neither_the_broker_nor_the_qbittorrent_libraries(tmp_path):
    """Docker runs it every 30 s on a NAS: it reads the config and a small JSON file, so it has
    no use for pika, requests, qbittorrent-api, SQLite or the logging set-up."""
    config = tmp_path / "c.ini"
    config.write_text(f"[state]\npath = {tmp_path / 'state.sqlite3'}\n")
    heavy = ["pika", "requests", "urllib3", "qbittorrentapi", "sqlite3", "pythonjsonlogger"]

    loaded = fresh(
        "import contextlib, io, json, sys\n"
        "from qbit_consumer.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    code = main(['healthcheck', '--config', {str(config)!r}])\n"
        f"print(json.dumps([code, out.getvalue(), [m for m in {heavy!r} if m in sys.modules]]))\n"
    )

    assert loaded == [
        1,
        f"unhealthy: {tmp_path / 'state.health.json'} does not exist: the service is not "
        "running (or not yet)\n",
        [],
    ]
