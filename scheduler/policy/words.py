"""Words for reasons people read: counts with their plurals, durations at a glance."""

from __future__ import annotations

import math


def plural(n: int, word: str) -> str:
    """'1 node', '2 nodes', '0 GPUs', '1 preempted job'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def duration(seconds: float) -> str:
    """Seconds in words a person reads at a glance: '45 s', '12 min', '2 h 5 min', '3 d 4 h'.

    Rounded to the unit shown, so the figure is never more precise than it looks.
    """
    if math.isnan(seconds) or math.isinf(seconds):
        return "an unknown time"
    s = max(0.0, seconds)
    if round(s) < 60:
        return f"{round(s)} s"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        h, m = divmod(minutes, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d {h} h" if h else f"{d} d"
