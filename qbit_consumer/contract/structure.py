"""Strict structuring of untrusted input into attrs classes, with errors a person can read.

cattrs is lenient by default (``str(5)`` is a fine string to it, and ``"abc"`` is a fine list of
three strings); both the INI file and the command bodies are untrusted, so everything here is
strict. Each failure is reduced to one ``(field, sentence)`` pair: config errors and dead-letter
details both name the field that was wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

T = TypeVar("T")


class FieldError(ValueError):
    """A value was rejected; ``field`` names it (None when it is the object as a whole)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` cut to a length that fits one log or header line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validator(check: Callable[[Any], str | None]) -> Callable[[Any, attrs.Attribute, Any], None]:
    """Turn ``check(value) -> problem or None`` into an attrs validator raising FieldError."""

    def _validate(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        problem = check(value)
        if problem is not None:
            raise FieldError(attribute.name, problem)

    return _validate


def structure(converter: cattrs.Converter, data: Any, cls: type[T]) -> T:
    """Structure ``data`` into ``cls``, raising one FieldError for the first problem found."""
    try:
        return converter.structure(data, cls)
    except ClassValidationError as exc:
        raise _first_field_error(exc) from None
    except ForbiddenExtraKeysError as exc:
        raise FieldError(sorted(exc.extra_fields)[0], "unknown key") from None
    except FieldError:
        raise
    except (TypeError, ValueError) as exc:
        raise FieldError(None, str(exc)) from None


def _first_field_error(exc: ClassValidationError) -> FieldError:
    with_notes, others = exc.group_exceptions()
    for sub, note in with_notes:
        if isinstance(sub, ClassValidationError):
            inner = _first_field_error(sub)
            return FieldError(
                f"{note.name}.{inner.field}" if inner.field else note.name, inner.message
            )
        message = sub.message if isinstance(sub, FieldError) else str(sub)
        if isinstance(sub, KeyError):
            message = "is required"
        return FieldError(note.name, message)
    for sub in others:
        if isinstance(sub, FieldError):
            return sub
        if isinstance(sub, ForbiddenExtraKeysError):
            return FieldError(sorted(sub.extra_fields)[0], "unknown key")
        if isinstance(sub, ClassValidationError):
            return _first_field_error(sub)
        return FieldError(None, str(sub))
    return FieldError(None, str(exc))
