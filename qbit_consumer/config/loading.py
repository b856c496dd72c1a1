"""Reading the configuration: the INI file, then the environment over it, each value checked
by the sections' own rules (``sections``).

Every key has the default of CONTRACT section 2, so a file only needs what differs. Any key can be
overridden by an environment variable ``QBIT_CONSUMER_<SECTION>_<KEY>`` (secrets need not be in the
file), or by ``QBIT_CONSUMER_<SECTION>_<KEY>_FILE`` naming a file that holds the value (Docker and
podman secrets are mounted as files: the value then shows in no ``inspect`` output). Whatever is
wrong is reported as one ConfigError line naming the file (or the environment variable), the
section and the key; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import configparser
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import cattrs

from qbit_consumer.config.sections import (
    DEFAULT_CATEGORIES,
    CommandsConfig,
    Config,
    HistoryConfig,
    LoggingConfig,
    PollingConfig,
    QbittorrentConfig,
    RabbitmqConfig,
    ServiceConfig,
    StateConfig,
)
from qbit_consumer.contract.structure import FieldError, short_repr, structure
from qbit_consumer.errors import ConfigError

ENV_PREFIX: Final = "QBIT_CONSUMER_"

_CATEGORY_RE = re.compile(r"^[^\\/\s][^\\]*$")

_SECTIONS: Final[dict[str, type]] = {
    "service": ServiceConfig,
    "rabbitmq": RabbitmqConfig,
    "qbittorrent": QbittorrentConfig,
    "polling": PollingConfig,
    "commands": CommandsConfig,
    "history": HistoryConfig,
    "state": StateConfig,
    "logging": LoggingConfig,
}
_ALL_SECTIONS: Final = (*_SECTIONS, "categories")


def _strict_converter() -> cattrs.Converter:
    """INI values are all strings: convert them by hand, and refuse anything unclear."""
    conv = cattrs.Converter(forbid_extra_keys=True)

    def to_int(value: Any, _: type) -> int:
        try:
            return int(str(value).strip(), 10)
        except ValueError:
            raise ValueError(f"expected a whole number, got {short_repr(value)}") from None

    def to_float(value: Any, _: type) -> float:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {short_repr(value)}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {short_repr(value)}")
        return number

    def to_bool(value: Any, _: type) -> bool:
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {short_repr(value)}")

    def to_keys(value: Any, _: type) -> tuple[str, ...]:
        keys = tuple(part.strip() for part in str(value).split(",") if part.strip())
        for key in keys:
            if not re.fullmatch(r"[A-Za-z0-9_.*#-]{1,255}", key):
                raise ValueError(f"{short_repr(key)} is not a valid binding key")
        return keys

    conv.register_structure_hook(int, to_int)
    conv.register_structure_hook(float, to_float)
    conv.register_structure_hook(bool, to_bool)
    conv.register_structure_hook(str, lambda v, _: str(v).strip())
    conv.register_structure_hook(Path, lambda v, _: Path(str(v).strip()))
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], to_keys)
    return conv


_CONVERTER: Final = _strict_converter()


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path``, apply environment overrides, and validate everything.

    :raises ConfigError: with one line that names the file or variable, the section and the key.
    """
    environ = os.environ if environ is None else environ
    where = str(path)
    raw = _read_ini(Path(path))
    origin: dict[tuple[str, str], str] = {}
    _apply_environment(raw, environ, origin)

    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        values = raw.get(section, {})
        try:
            sections[section] = structure(_CONVERTER, values, cls)
        except FieldError as exc:
            key = exc.field or "?"
            source = origin.get((section, key), where)
            raise ConfigError(f"{source}: [{section}] {key}: {exc.message}") from None
    categories = raw.get("categories")
    if categories is None:
        categories = dict(DEFAULT_CATEGORIES)
    for name in categories:
        if not _CATEGORY_RE.match(name) or "//" in name or name.endswith("/"):
            source = origin.get(("categories", name), where)
            raise ConfigError(f"{source}: [categories] {name}: is not a valid qBittorrent category")
    if not categories:
        raise ConfigError(f"{where}: [categories]: needs at least one category")
    warnings = []
    file_password = raw.get("qbittorrent", {}).get("password", "").strip()
    in_file = ("qbittorrent", "password") not in origin and bool(file_password)
    in_url = ("rabbitmq", "url") not in origin and bool(urlsplit(sections["rabbitmq"].url).password)
    if (in_file or in_url) and Path(path).stat().st_mode & 0o004:
        warnings.append(
            f"{where} holds a password and any user of this machine can read it: "
            f"chmod o-r {where}, or pass secrets as QBIT_CONSUMER_* environment variables"
        )
    return Config(categories=categories, source=where, warnings=tuple(warnings), **sections)


def _read_ini(path: Path) -> dict[str, dict[str, str]]:
    # No interpolation: passwords may contain '%'. Inline comments start with ';' only,
    # because '#' is a meaningful topic binding key.
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";",), default_section="\x00none"
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep category case
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {first_line}") from None

    raw: dict[str, dict[str, str]] = {}
    for section in parser.sections():
        if section not in _ALL_SECTIONS:
            raise ConfigError(
                f"{path}: [{section}]: unknown section (expected one of {', '.join(_ALL_SECTIONS)})"
            )
        items = parser.items(section)
        if section == "categories":
            raw[section] = {key.strip(): value.strip() for key, value in items}
        else:
            raw[section] = {key.strip().lower(): value for key, value in items}
    return raw


def _apply_environment(
    raw: dict[str, dict[str, str]],
    environ: Mapping[str, str],
    origin: dict[tuple[str, str], str],
) -> None:
    """``QBIT_CONSUMER_POLLING_INTERVAL_SECONDS=2`` sets ``[polling] interval_seconds``.

    Variables whose section part is not one of ours (``QBIT_CONSUMER_TEST_...``) are left alone;
    ``QBIT_CONSUMER_CATEGORIES_<NAME>`` adds or changes the category ``<name>`` (lower case).
    ``QBIT_CONSUMER_<SECTION>_<KEY>_FILE`` reads the value from a file (a Docker or podman
    secret); setting both it and ``QBIT_CONSUMER_<SECTION>_<KEY>`` is a mistake, not a choice.
    """
    for variable, value in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX):
            continue
        rest = variable[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in _ALL_SECTIONS or not key:
            continue
        where = f"environment {variable}"
        if section == "categories":
            value = value.strip()
        elif key.endswith(_FILE_SUFFIX) and key != _FILE_SUFFIX:
            key = key.removesuffix(_FILE_SUFFIX)
            plain = variable.removesuffix(_FILE_SUFFIX.upper())
            if plain in environ:
                raise ConfigError(f"{where}: {plain} is set as well: keep one of the two")
            value = _read_secret_file(value, where)
        raw.setdefault(section, {})[key] = value
        origin[(section, key)] = where


_FILE_SUFFIX: Final = "_file"
#: A secret is a password, a key or a URL: anything longer is the wrong file.
_SECRET_FILE_MAX_BYTES: Final = 65_536


def _read_secret_file(name: str, where: str) -> str:
    """The value a ``..._FILE`` variable points to, without the line ends at its end (as a
    shell's ``$(cat file)`` would read it: secret files usually end with one)."""
    path = Path(name.strip())
    try:
        with path.open("rb") as handle:
            data = handle.read(_SECRET_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path} ({exc.strerror})") from None
    if len(data) > _SECRET_FILE_MAX_BYTES:
        raise ConfigError(f"{where}: {path} is larger than {_SECRET_FILE_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text") from None
