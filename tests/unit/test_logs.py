"""Log lines: one line per record in the text format, and no configured secret in any format."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote, quote_plus

import pytest

from qbit_consumer.config import LoggingConfig
from qbit_consumer.logs import escape_controls, setup_logging
from qbit_consumer.redact import Scrubber, config_secrets
from tests.fixtures.service import load, write_ini

HOSTILE = "evil\nINFO forged record\r\x00\x1b[2J\x7f\x9b31m\u2028end"


@pytest.fixture
def logged(capsys):
    """Sets logging up as `run` does; gives what the handler wrote to stderr. Puts the root
    logger back afterwards, so that pytest's own log capture works for the other tests."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("pika", "urllib3", "qbittorrentapi")}

    def setup(fmt: str, secrets: tuple[str, ...] = ()) -> None:
        capsys.readouterr()
        setup_logging(LoggingConfig(format=fmt, level="DEBUG"), secrets)

    yield setup, lambda: capsys.readouterr().err
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, was in noisy.items():
        logging.getLogger(name).setLevel(was)


def test_escape_controls_writes_every_control_character_as_an_escape():
    assert escape_controls("a\nb\tc\x00d\x1be\x7ff\x9bg\u2028h") == (
        "a\\nb\\tc\\x00d\\x1be\\x7ff\\x9bg\\u2028h"
    )
    assert escape_controls("é ü 日本 \\x1b") == "é ü 日本 \\x1b"  # printable text stays as is
    assert escape_controls("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"


def test_a_text_record_stays_one_line_whatever_its_message_and_fields_hold(logged):
    setup, output = logged
    setup("text")
    logging.getLogger("qbit_consumer.commands.handling").info(
        "added %s", HOSTILE, extra={"request_id": HOSTILE, "category": "tv"}
    )
    line = output()
    assert line.count("\n") == 1 and line.endswith("\n")
    for raw in ("\r", "\x00", "\x1b", "\x7f", "\x9b", "\u2028"):
        assert raw not in line
    escaped = "evil\\nINFO forged record\\r\\x00\\x1b[2J\\x7f\\x9b31m\\u2028end"
    assert f"added {escaped} [request_id={escaped} category=tv]" in line


def test_a_traceback_keeps_its_line_breaks_indented_and_loses_control_characters(logged):
    setup, output = logged
    setup("text")
    forged = "x\n2026-01-01 00:00:00,000 CRITICAL MainThread forged: \x1b[2J"
    try:
        raise ValueError(f"bad name {forged}")
    except ValueError:
        logging.getLogger("qbit_consumer.tracking.poller").exception("crashed on %s", forged)
    first, *rest = output().splitlines()
    assert first.endswith("crashed on " + escape_controls(forged))
    assert rest[0] == "  Traceback (most recent call last):"
    assert rest[-2:] == [
        "  ValueError: bad name x",  # the message's newline cannot be told from the traceback's,
        "  2026-01-01 00:00:00,000 CRITICAL MainThread forged: \\x1b[2J",  # but starts no record
    ]
    assert all(line.startswith("  ") for line in rest)


def test_a_json_record_is_one_line_with_its_control_characters_escaped(logged):
    setup, output = logged
    setup("json")
    logging.getLogger("qbit_consumer.commands.handling").info("added %s", HOSTILE)
    line = output()
    assert line.count("\n") == 1
    assert json.loads(line)["message"] == f"added {HOSTILE}"


SECRET = 'pa"ss\\wörd/ x'  # quotes, a backslash, non-ASCII, a slash and a space


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_configured_secret_reaches_a_line_in_any_form_from_any_logger(logged, fmt):
    setup, output = logged
    setup(fmt, (SECRET,))

    # Third-party loggers, a %r argument, a URL with the secret percent-encoded, a traceback.
    logging.getLogger("urllib3.connectionpool").warning(
        "Base URL: %s", f"http://a:{quote(SECRET)}@h/"
    )
    logging.getLogger("qbittorrentapi.request").warning("body %r", f"password={quote_plus(SECRET)}")
    logging.getLogger("some.library").warning("raw %s and repr %r", SECRET, SECRET)
    try:
        raise RuntimeError(f"login with {SECRET!r} failed")
    except RuntimeError:
        logging.getLogger("qbit_consumer.cli.main").exception("failed")
    text = output()
    assert text.count("***") == 5
    for fragment in ("wörd", "w%C3%B6rd", "w\\u00f6rd", "ss\\\\w"):  # raw, URL, JSON, repr
        assert fragment not in text, fragment


def test_without_secrets_nothing_is_scrubbed(logged):
    setup, output = logged
    setup("text")
    logging.getLogger("qbit_consumer").warning("amqp://guest:***@host and *** stay as they are")
    assert "amqp://guest:***@host and *** stay as they are" in output()


def test_the_secrets_of_a_config_are_its_password_and_the_passwords_in_its_urls(tmp_path):
    cfg = load(
        write_ini(
            tmp_path / "c.ini",
            {
                "rabbitmq": {"url": "amqp://u:r%40bbit@h1/%2F,amqp://u:second@h2/%2F"},
                "qbittorrent": {"url": "http://proxy:pr0xy@nas:8080", "password": "qb-pw"},
            },
        )
    )
    assert config_secrets(cfg) == {"r%40bbit", "r@bbit", "second", "pr0xy", "qb-pw"}


def test_the_scrubber_removes_the_longest_form_first():
    scrub = Scrubber(["abc", "abcdef"])
    assert scrub("xx abcdef yy abc") == "xx *** yy ***"
    assert Scrubber([])("nothing to hide") == "nothing to hide"
