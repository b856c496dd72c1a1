"""Reading a command's body, whatever the command: the checks every body goes through before a
command's own fields are looked at (CONTRACT section 4), and what is known of a command so far.

Each way a body can be wrong maps onto one dead-letter reason. A command's own fields are
structured by its module in ``commands`` with ``structure_fields``; past that, everything works
with typed objects and never looks at the raw body again.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeVar

import attrs
import cattrs

from qbit_consumer.contract.structure import FieldError, structure
from qbit_consumer.errors import INVALID_JSON, INVALID_MESSAGE, TOO_LARGE, InvalidCommand

T = TypeVar("T")

MAX_BODY_BYTES: Final = 64 * 1024
MAX_REQUEST_ID_CHARS: Final = 128
#: The tag on every torrent this service added, so a person (or a filter) can tell them apart.
MANAGED_TAG: Final = "qbit-consumer"

# A JSON escape of a UTF-16 surrogate (D800-DFFF): only then can a parsed string hold one.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


@attrs.define
class CommandContext:
    """What is known about a command so far; filled while parsing, so that a command that
    fails half way still gets a ``downloads.failed`` event with its request id and hash."""

    request_id: str | None = None
    hash: str | None = None
    infohash_v2: str | None = None
    name: str | None = None
    category: str | None = None
    #: The body's size in bytes: the limit of an add depends on what it carries.
    size: int = 0


def read_body(
    body: bytes,
    *,
    correlation_id: str | None,
    message_id: str | None,
    context: CommandContext,
    max_bytes: int = MAX_BODY_BYTES,
) -> dict[str, Any]:
    """The body as a JSON object, checked as every command's is (``max_bytes``: an add may
    carry a .torrent file, and be larger).

    The request id falls back to the AMQP ``correlation_id``, then ``message_id`` (CONTRACT
    section 4); ``context`` learns it before anything else can fail.
    :raises InvalidCommand: with the reason code and a one-sentence detail.
    """
    context.request_id = _fallback_id(correlation_id) or _fallback_id(message_id)
    context.size = len(body)
    if len(body) > max_bytes:
        raise InvalidCommand(TOO_LARGE, f"body is {len(body)} bytes, the limit is {max_bytes}")
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
        raise InvalidCommand(INVALID_MESSAGE, f"body is a JSON {json_type(data)}, not an object")
    request_id = data.get("request_id")
    if isinstance(request_id, str) and 0 < len(request_id) <= MAX_REQUEST_ID_CHARS:
        context.request_id = request_id
    return data


def structure_fields(data: dict[str, Any], cls: type[T]) -> T:
    """A command's own fields, strictly typed (``cls`` is an attrs class; unknown keys are
    ignored, as the contract says). ``request_id``, when ``cls`` has it, is checked here.

    :raises InvalidCommand: ``invalid_message``, naming the field.
    """
    try:
        fields = structure(_CONVERTER, data, cls)
    except FieldError as exc:
        raise InvalidCommand(INVALID_MESSAGE, f"field {exc.field!r} {exc.message}") from None
    request_id = getattr(fields, "request_id", None)
    if request_id is not None and not 0 < len(request_id) <= MAX_REQUEST_ID_CHARS:
        raise InvalidCommand(
            INVALID_MESSAGE, f"field 'request_id' must be 1-{MAX_REQUEST_ID_CHARS} characters"
        )
    return fields


def json_type(value: Any) -> str:
    """A value's type in JSON's words, for details a person reads."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "number" if isinstance(value, int | float) else type(value).__name__


def strict_converter() -> cattrs.Converter:
    """A converter that takes JSON's types as they are: no string from a number, no
    boolean from a string; unknown fields are ignored."""
    conv = cattrs.Converter(forbid_extra_keys=False)  # unknown fields are ignored (CONTRACT)

    def strict_str(value: Any, _: type) -> str:
        if not isinstance(value, str):
            raise FieldError(None, f"must be a string, got {json_type(value)}")
        return value

    def strict_str_list(value: Any, _: type) -> list[str]:
        if not isinstance(value, list):
            raise FieldError(None, f"must be a list of strings, got {json_type(value)}")
        for item in value:
            if not isinstance(item, str):
                raise FieldError(None, f"must be a list of strings, has {json_type(item)}")
        return value

    def strict_bool(value: Any, _: type) -> bool:
        if not isinstance(value, bool):  # "false" would be true to bool()
            raise FieldError(None, f"must be true or false, got {json_type(value)}")
        return value

    conv.register_structure_hook(str, strict_str)
    conv.register_structure_hook(bool, strict_bool)
    conv.register_structure_hook_func(lambda t: t == list[str], strict_str_list)
    return conv


_CONVERTER: Final = strict_converter()


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


def _fallback_id(value: str | None) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_CHARS:
        return value
    return None
