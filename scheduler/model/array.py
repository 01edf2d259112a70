"""Job arrays: Slurm's `--array` syntax, parsed into task indices and a concurrency cap.

`0-15`, `1,3,5-9:2` (5, 7, 9), `0-99%8` (at most 8 tasks running at once). Indices are whole numbers
from 0 to MAX_ARRAY_INDEX, as Slurm's MaxArraySize bounds them (the largest index is one less than
it), so an array has at most MAX_ARRAY_SIZE tasks. Every error names the part at fault and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_ARRAY_SIZE = 10_000
"""As Slurm's MaxArraySize: indices are 0 to MAX_ARRAY_SIZE - 1, so at most this many tasks."""
MAX_ARRAY_INDEX = MAX_ARRAY_SIZE - 1
MAX_ARRAY_TEXT = 4096

_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


class ArrayError(ValueError):
    """An array expression that cannot be used; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class ArrayRange:
    """The tasks of an array: its indices in ascending order, and the cap on tasks running at once."""

    indices: tuple[int, ...]
    max_running: int | None


def parse_array(text: str) -> ArrayRange:
    """`0-15%4` → indices 0..15, at most 4 running; raises ArrayError naming the fix."""
    if len(text) > MAX_ARRAY_TEXT:
        raise ArrayError(f"is longer than {MAX_ARRAY_TEXT} characters: use ranges such as 0-999")
    body, sep, cap_text = text.strip().partition("%")
    max_running: int | None = None
    if sep:
        if not cap_text.isascii() or not cap_text.isdigit():
            raise ArrayError(f"%{cap_text}: the cap after % is a whole number of tasks, e.g. 0-15%4")
        max_running = int(cap_text)
        if max_running < 1:
            raise ArrayError(f"%{cap_text}: at least 1 task must be allowed to run — write e.g. %4")
    if not body:
        raise ArrayError("is empty: give indices such as 0-15, 1,3,5 or 0-15:2")
    indices: set[int] = set()
    for part in body.split(","):  # every index is ≤ MAX_ARRAY_INDEX: at most MAX_ARRAY_SIZE tasks
        indices.update(_part(part.strip()))
    return ArrayRange(indices=tuple(sorted(indices)), max_running=max_running)


def _part(part: str) -> range:
    match = _RANGE.match(part) if part.isascii() else None
    if match is None:
        raise ArrayError(
            f"{part!r} is not an index or a range: write N, N-M or N-M:STEP (e.g. 0-15, 1,3,5-9:2)"
        )
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    step = int(match.group(3)) if match.group(3) is not None else 1
    for value in (first, last):
        if value > MAX_ARRAY_INDEX:
            raise ArrayError(
                f"index {value} is above the largest, {MAX_ARRAY_INDEX} "
                f"(indices are 0-{MAX_ARRAY_INDEX}, at most {MAX_ARRAY_SIZE:,} tasks)"
            )
    if last < first:
        raise ArrayError(f"{part}: the range ends before it starts — write {last}-{first}")
    if step < 1:
        raise ArrayError(f"{part}: the step after ':' must be at least 1 — write e.g. {first}-{last}:2")
    return range(first, last + 1, step)


@lru_cache(maxsize=4096)
def max_running_of(text: str | None) -> int | None:
    """The `%N` cap of an array expression, None without one (read by every cycle: cached)."""
    if text is None:
        return None
    _, sep, cap = text.partition("%")
    cap = cap.strip()
    return int(cap) if sep and cap.isdigit() else None


def compact(indices: tuple[int, ...] | list[int]) -> str:
    """Sorted indices in Slurm's short form: consecutive runs as `a-b`, the rest comma-separated."""
    out: list[str] = []
    values = sorted(indices)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(out)
