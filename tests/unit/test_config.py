from __future__ import annotations

from pathlib import Path

import pytest

from qbit_consumer.config import load_config
from qbit_consumer.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.ini"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.ini"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_config_loads_and_matches_the_contract_defaults():
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.rabbitmq.url == "amqp://guest:guest@localhost:5672/%2F"
    assert (cfg.rabbitmq.command_exchange, cfg.rabbitmq.command_queue) == (
        "downloads",
        "downloads.commands",
    )
    assert (cfg.rabbitmq.retry_queue, cfg.rabbitmq.dead_letter_queue) == (
        "downloads.commands.retry",
        "downloads.commands.dlq",
    )
    assert cfg.rabbitmq.queue_type == "quorum"
    assert cfg.rabbitmq.platform_exchange == ""
    assert cfg.rabbitmq.platform_routing_keys == ("#",)
    assert (
        cfg.rabbitmq.prefetch_count,
        cfg.rabbitmq.max_attempts,
        cfg.rabbitmq.retry_delay_seconds,
    ) == (10, 5, 30)
    assert cfg.qbittorrent.verify_tls is True and cfg.qbittorrent.timeout_seconds == 10
    assert (cfg.polling.interval_seconds, cfg.polling.failure_alert_threshold) == (5, 3)
    assert cfg.polling.stalled_after_seconds == 1800
    assert dict(cfg.categories) == {
        n: "" for n in ("movies", "tv", "music", "books", "software", "other")
    }
    assert (cfg.logging.level, cfg.logging.format) == ("INFO", "json")
    assert (cfg.service.name, cfg.service.status_interval_seconds) == ("qbit-consumer", 60)
    assert cfg.service.unhealthy_after_seconds == 90
    assert cfg.rabbitmq.status_queue == "downloads.status"


def test_an_empty_file_means_all_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}).rabbitmq.max_attempts == 5


def test_environment_overrides_any_key_and_can_hold_secrets(tmp_path):
    path = write(tmp_path, "[qbittorrent]\npassword = in-file\n[categories]\nmovies = /m\n")
    cfg = load_config(
        path,
        environ={
            "QBIT_CONSUMER_QBITTORRENT_PASSWORD": "from-env",
            "QBIT_CONSUMER_RABBITMQ_PREFETCH_COUNT": "3",
            "QBIT_CONSUMER_CATEGORIES_ANIME": "/anime",
            "QBIT_CONSUMER_TEST_AMQP_URL": "amqp://elsewhere",  # not ours: ignored
        },
    )
    assert cfg.qbittorrent.password == "from-env"
    assert cfg.rabbitmq.prefetch_count == 3
    assert dict(cfg.categories) == {"movies": "/m", "anime": "/anime"}
    assert "from-env" not in repr(cfg)


def test_values_may_contain_percent_and_hash_and_comments_start_with_semicolon(tmp_path):
    path = write(
        tmp_path,
        "[rabbitmq]\nplatform_routing_keys = downloads.#, downloads.completed ; a comment\n"
        "[qbittorrent]\npassword = 50%#off\n",
    )
    cfg = load_config(path, environ={})
    assert cfg.rabbitmq.platform_routing_keys == ("downloads.#", "downloads.completed")
    assert cfg.qbittorrent.password == "50%#off"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            "[rabbitmq]\nurl = http://localhost\n",
            {},
            "[rabbitmq] url: must start with amqp:// or amqps://",
        ),
        ("[rabbitmq]\nurl = amqp://\n", {}, "[rabbitmq] url: has no host name"),
        ("[rabbitmq]\nurl = amqp://h:99999/\n", {}, "[rabbitmq] url: is not a valid URL"),
        (
            "[rabbitmq]\nqueue_type = stream\n",
            {},
            "[rabbitmq] queue_type: must be one of quorum, classic",
        ),
        (
            "[rabbitmq]\nprefetch_count = ten\n",
            {},
            "[rabbitmq] prefetch_count: expected a whole number, got 'ten'",
        ),
        ("[rabbitmq]\nmax_attempts = 0\n", {}, "[rabbitmq] max_attempts: must be at least 1"),
        (
            "[rabbitmq]\nplatform_routing_keys = ,\n",
            {},
            "[rabbitmq] platform_routing_keys: needs at least one",
        ),
        (
            "[rabbitmq]\ncommand_queue = has space\n",
            {},
            "[rabbitmq] command_queue: must be 1-200 characters",
        ),
        (
            "[rabbitmq]\nretry_delay_seconds = nan\n",
            {},
            "[rabbitmq] retry_delay_seconds: expected a finite number",
        ),
        ("[rabbitmq]\nprefetch = 1\n", {}, "[rabbitmq] prefetch: unknown key"),
        ("[rabitmq]\nurl = amqp://h\n", {}, "[rabitmq]: unknown section"),
        (
            "[qbittorrent]\nurl = ftp://x\n",
            {},
            "[qbittorrent] url: must start with http:// or https://",
        ),
        (
            "[qbittorrent]\nverify_tls = maybe\n",
            {},
            "[qbittorrent] verify_tls: expected true or false, got 'maybe'",
        ),
        (
            "[polling]\ninterval_seconds = 0\n",
            {},
            "[polling] interval_seconds: must be at least 0.1",
        ),
        ("[logging]\nformat = xml\n", {}, "[logging] format: must be one of json, text"),
        ("[categories]\n", {}, "[categories]: needs at least one category"),
        ("[categories]\n/abs = x\n", {}, "[categories] /abs: is not a valid qBittorrent category"),
        ("no section header\n", {}, "File contains no section headers"),
        (
            "[polling]\ninterval_seconds = 1\ninterval_seconds = 2\n",
            {},
            "option 'interval_seconds'",
        ),
        (
            "",
            {"QBIT_CONSUMER_POLLING_INTERVAL_SECONDS": "soon"},
            "environment QBIT_CONSUMER_POLLING_INTERVAL_SECONDS: [polling] interval_seconds: expected a number",
        ),
        (
            "",
            {"QBIT_CONSUMER_RABBITMQ_NOPE": "1"},
            "environment QBIT_CONSUMER_RABBITMQ_NOPE: [rabbitmq] nope: unknown key",
        ),
        (
            "[service]\nstatus_interval_seconds = 0.5\n",
            {},
            "[service] status_interval_seconds: must be 0 (off) or between 1 and 86400 seconds",
        ),
        (
            "[service]\nunhealthy_after_seconds = 1e9\n",
            {},
            "[service] unhealthy_after_seconds: must be at most 86400",
        ),
        ("[service]\nname = my nas\n", {}, "[service] name: must be 1-200 characters"),
        (
            "",
            {"QBIT_CONSUMER_QBITTORRENT_PASSWORD_FILE": "/nonexistent/secret"},
            "environment QBIT_CONSUMER_QBITTORRENT_PASSWORD_FILE: cannot read "
            "/nonexistent/secret (No such file or directory)",
        ),
        (
            "",
            {
                "QBIT_CONSUMER_QBITTORRENT_PASSWORD_FILE": "/etc/hostname",
                "QBIT_CONSUMER_QBITTORRENT_PASSWORD": "also",
            },
            "environment QBIT_CONSUMER_QBITTORRENT_PASSWORD_FILE: "
            "QBIT_CONSUMER_QBITTORRENT_PASSWORD is set as well: keep one of the two",
        ),
    ],
)
def test_each_bad_config_gives_one_line_naming_file_section_and_key(tmp_path, text, env, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=env)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    if not env:
        assert message.startswith(str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.ini: file not found"):
        load_config(tmp_path / "nope.ini", environ={})


def test_a_world_readable_file_with_a_password_gets_a_warning(tmp_path):
    path = write(tmp_path, "[qbittorrent]\npassword = s3cret\n")
    path.chmod(0o644)
    [warning] = load_config(path, environ={}).warnings
    assert "chmod o-r" in warning and str(path) in warning and "s3cret" not in warning
    path.chmod(0o640)
    assert load_config(path, environ={}).warnings == ()


def test_a_password_from_the_environment_needs_no_private_file(tmp_path):
    path = write(tmp_path, "[rabbitmq]\nurl = amqp://localhost/\n")
    path.chmod(0o644)
    cfg = load_config(path, environ={"QBIT_CONSUMER_QBITTORRENT_PASSWORD": "s3cret"})
    assert cfg.warnings == ()
    path.write_text("[rabbitmq]\nurl = amqp://user:pw@localhost/\n")
    assert load_config(path, environ={}).warnings


def test_a_secret_comes_from_the_file_a_file_variable_names_without_its_line_end(tmp_path):
    secret = tmp_path / "qbittorrent_password"
    secret.write_text("s3cret\n", encoding="utf-8")
    url = tmp_path / "amqp_url"
    url.write_text("amqp://qbit:p%40ss@rabbitmq:5672/%2F\r\n", encoding="utf-8")

    cfg = load_config(
        write(tmp_path, "[qbittorrent]\nusername = me\n"),
        environ={
            "QBIT_CONSUMER_QBITTORRENT_PASSWORD_FILE": str(secret),
            "QBIT_CONSUMER_RABBITMQ_URL_FILE": str(url),
        },
    )

    assert cfg.qbittorrent.password == "s3cret"
    assert cfg.rabbitmq.url == "amqp://qbit:p%40ss@rabbitmq:5672/%2F"
    assert cfg.qbittorrent.username == "me"


def test_a_file_variable_refuses_a_file_too_large_to_be_a_secret_and_never_quotes_it(tmp_path):
    big = tmp_path / "not-a-secret"
    big.write_bytes(b"x" * 70_000)
    with pytest.raises(ConfigError) as info:
        load_config(
            write(tmp_path, ""), environ={"QBIT_CONSUMER_QBITTORRENT_API_KEY_FILE": str(big)}
        )
    assert str(info.value) == (
        f"environment QBIT_CONSUMER_QBITTORRENT_API_KEY_FILE: {big} is larger than 65536 bytes"
    )
