"""Canonical ids and bounded numbers in URLs.

A job id is a decimal of at most 19 ASCII digits whose value fits a signed 64-bit integer; leading
zeros name the same job (`007` is job 7). Anything else (`abc`, `-1`, `1e3`, `٣`, 2^63) names no
job: the routes answer 404 exactly as for a job that does not exist, never 500. Cursors, sequence
numbers and log offsets are bounded to the same 64 bits (422 beyond).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

__all__ = ["MAX_INT64", "After", "canonical_id"]

MAX_INT64 = 2**63 - 1
_MAX_DIGITS = 19


def canonical_id(raw: str) -> str | None:
    """'7' for '007'; None for anything that is not a job (or token) id."""
    if not raw or len(raw) > _MAX_DIGITS or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return str(value) if value <= MAX_INT64 else None


After = Annotated[
    int | None,
    Query(ge=0, le=MAX_INT64, description="cursor: the X-Next-Cursor of the previous page"),
]
