"""Strict parsing of JSON request bodies, with one-line errors naming `body` (or the duplicated key).

FastAPI's own body parsing accepts duplicate keys (the last wins), NaN and Infinity, and answers
malformed input with messages that quote Python reprs. The routes that take a body read the raw
bytes and call `parse_json` instead:

- the content type must be JSON (`application/json`, or any `+json` type) → else 415;
- the bytes must be UTF-8, a well-formed JSON document, without duplicate keys, NaN, Infinity or a
  number too large for a double (1e309), nested less deep than the parser's recursion limit (about
  1,000 levels; the 64 KiB body limit keeps the attempt cheap) → else 422.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["QUOTE_LIMIT", "BodyError", "is_json_type", "parse_json", "quote"]

QUOTE_LIMIT = 80


class BodyError(ValueError):
    """A body that cannot be parsed: HTTP status, the field, and a one-line message."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """A user's value for an error message: repr'd (control characters escaped), at most `limit`."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


class _BadNumber(ValueError):
    pass


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber(f"the number {text[:20]} is too large for a double")
    return value


def _constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a number JSON allows")


def is_json_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_json(raw: bytes, content_type: str | None, what: str = "the spec") -> Any:
    """The JSON document in `raw`; BodyError (415 or 422) for anything but a strict JSON body."""
    if not is_json_type(content_type):
        shown = quote((content_type or "none").split(";", 1)[0].strip(), 40)
        raise BodyError(
            415,
            "body",
            f"body: content type {shown} is not JSON: send {what} with Content-Type: application/json",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(
            422, "body", f"body: not valid UTF-8 (byte {exc.start}): send {what} as UTF-8 JSON"
        ) from None
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicates, parse_float=_finite, parse_constant=_constant
        )
    except _Duplicate as dup:
        raise BodyError(
            422, dup.key[:64] or "body", f"body: duplicate key {quote(dup.key)}: give each key once"
        ) from None
    except json.JSONDecodeError as exc:
        raise BodyError(
            422,
            "body",
            f"body: malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg}): "
            f"send {what} as a JSON object",
        ) from None
    except _BadNumber as exc:
        raise BodyError(422, "body", f"body: {exc}: use finite JSON numbers") from None
    except RecursionError:
        raise BodyError(422, "body", f"body: JSON nested too deeply: send {what} as a flat object") from None
    except ValueError:  # an integer of more than 4,300 digits
        raise BodyError(422, "body", "body: a number has too many digits: use numbers of sane size") from None
