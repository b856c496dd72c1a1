"""The ``downloads.add`` command: parsed and validated once, at the edge.

Everything past ``parse_command`` works with a typed ``AddCommand`` and never looks at the raw
body again. Each way a body can be wrong maps onto one dead-letter reason of CONTRACT section 4.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any, Final

import attrs
import cattrs

from qbit_consumer.contract.magnet import Magnet, parse_magnet
from qbit_consumer.contract.structure import FieldError, short_repr, structure
from qbit_consumer.errors import (
    INVALID_CATEGORY,
    INVALID_JSON,
    INVALID_MESSAGE,
    TOO_LARGE,
    InvalidCommand,
)

MAX_BODY_BYTES: Final = 64 * 1024
MAX_REQUEST_ID_CHARS: Final = 128
MAX_TAGS: Final = 32
MAX_TAG_CHARS: Final = 100
#: The tag on every torrent this service added, so a person (or a filter) can tell them apart.
MANAGED_TAG: Final = "qbit-consumer"

# A JSON escape of a UTF-16 surrogate (D800-DFFF): only then can a parsed string hold one.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
# qBittorrent joins tags with commas, so a comma would split one tag into two.
_TAG_RE: Final = re.compile(r"^[^,\x00-\x1f\x7f]+$")


@attrs.frozen(kw_only=True)
class AddCommand:
    magnet: Magnet
    category: str
    request_id: str | None
    tags: tuple[str, ...]


@attrs.define
class CommandContext:
    """What is known about a command so far; filled while parsing, so that a command that
    fails half way still gets a ``downloads.failed`` event with its request id and hash."""

    request_id: str | None = None
    magnet: Magnet | None = None
    category: str | None = None


@attrs.frozen(kw_only=True)
class _Body:
    magnet: str
    category: str
    request_id: str | None = None
    tags: list[str] = attrs.field(factory=list)


def _strict_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=False)  # unknown fields are ignored (CONTRACT)

    def strict_str(value: Any, _: type) -> str:
        if not isinstance(value, str):
            raise FieldError(None, f"must be a string, got {_json_type(value)}")
        return value

    def strict_str_list(value: Any, _: type) -> list[str]:
        if not isinstance(value, list):
            raise FieldError(None, f"must be a list of strings, got {_json_type(value)}")
        for item in value:
            if not isinstance(item, str):
                raise FieldError(None, f"must be a list of strings, has {_json_type(item)}")
        return value

    conv.register_structure_hook(str, strict_str)
    conv.register_structure_hook_func(lambda t: t == list[str], strict_str_list)
    return conv


_CONVERTER: Final = _strict_converter()


def parse_command(
    body: bytes,
    *,
    correlation_id: str | None,
    message_id: str | None,
    categories: Collection[str],
    context: CommandContext,
) -> AddCommand:
    """Validate one command body.

    ``context`` is filled in as fields are understood. The request id falls back to the AMQP
    ``correlation_id``, then ``message_id`` (CONTRACT section 4).

    :raises InvalidCommand: with the reason code and a one-sentence detail.
    """
    context.request_id = _fallback_id(correlation_id) or _fallback_id(message_id)
    if len(body) > MAX_BODY_BYTES:
        raise InvalidCommand(TOO_LARGE, f"body is {len(body)} bytes, the limit is {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCommand(INVALID_JSON, f"body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise InvalidCommand(INVALID_JSON, "body is nested too deeply to parse") from None
    except ValueError as exc:
        raise InvalidCommand(INVALID_JSON, f"body is not JSON ({exc})") from None
    if _SURROGATE_ESCAPE.search(text) and not _encodable(data):
        raise InvalidCommand(
            INVALID_JSON,
            "body escapes a lone UTF-16 surrogate (like \\udc80), which is not Unicode text",
        )
    if not isinstance(data, dict):
        raise InvalidCommand(INVALID_MESSAGE, f"body is a JSON {_json_type(data)}, not an object")

    request_id = data.get("request_id")
    if isinstance(request_id, str) and 0 < len(request_id) <= MAX_REQUEST_ID_CHARS:
        context.request_id = request_id
    try:
        fields = structure(_CONVERTER, data, _Body)
    except FieldError as exc:
        raise InvalidCommand(INVALID_MESSAGE, f"field {exc.field!r} {exc.message}") from None
    if fields.request_id is not None and not 0 < len(fields.request_id) <= MAX_REQUEST_ID_CHARS:
        raise InvalidCommand(
            INVALID_MESSAGE, f"field 'request_id' must be 1-{MAX_REQUEST_ID_CHARS} characters"
        )

    context.magnet = parse_magnet(fields.magnet)
    if fields.category not in categories:
        raise InvalidCommand(
            INVALID_CATEGORY,
            f"category {short_repr(fields.category)} is not one of {', '.join(sorted(categories))}",
        )
    context.category = fields.category
    return AddCommand(
        magnet=context.magnet,
        category=fields.category,
        request_id=context.request_id,
        tags=_check_tags(fields.tags),
    )


def _encodable(data: Any) -> bool:
    """Whether every string in ``data`` (keys too) can be written as UTF-8.

    JSON's ``\\uXXXX`` escapes can name half of a surrogate pair alone; Python's parser accepts
    that and yields a string that nothing downstream can encode (events, logs, qBittorrent).
    """
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):  # too deep to check is refused as well
        return False
    return True


def _check_tags(tags: list[str]) -> tuple[str, ...]:
    if len(tags) > MAX_TAGS:
        raise InvalidCommand(
            INVALID_MESSAGE, f"field 'tags' has {len(tags)} tags, at most {MAX_TAGS}"
        )
    for tag in tags:
        if not _TAG_RE.match(tag) or tag != tag.strip() or len(tag) > MAX_TAG_CHARS:
            raise InvalidCommand(
                INVALID_MESSAGE,
                f"tag {short_repr(tag)} must be 1-{MAX_TAG_CHARS} characters without commas, "
                "control characters or surrounding spaces",
            )
    return tuple(dict.fromkeys(tags))


def _fallback_id(value: str | None) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_CHARS:
        return value
    return None


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "number" if isinstance(value, int | float) else type(value).__name__
