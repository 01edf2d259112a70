"""Words for reasons people read: plurals and durations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.policy.words import duration, plural


@pytest.mark.parametrize(
    ("n", "word", "text"),
    [(0, "node", "0 nodes"), (1, "node", "1 node"), (2, "node", "2 nodes"), (1, "GPU", "1 GPU"),
     (8, "GPU", "8 GPUs"), (1, "preempted job", "1 preempted job"), (3, "job", "3 jobs")],
)  # fmt: skip
def test_plural(n: int, word: str, text: str) -> None:
    assert plural(n, word) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"), (0.4, "0 s"), (45, "45 s"), (59.4, "59 s"),
        (59.6, "1 min"), (89, "1 min"), (720, "12 min"), (3540, "59 min"), (3569, "59 min"),
        (3571, "1 h"), (3600, "1 h"), (7500, "2 h 5 min"), (86339, "23 h 59 min"),
        (86370, "1 d"), (3 * 86400 + 4 * 3600, "3 d 4 h"), (10 * 86400 + 1700, "10 d"),
        (-5, "0 s"), (float("inf"), "an unknown time"), (float("nan"), "an unknown time"),
    ],
)  # fmt: skip
def test_duration_by_hand(seconds: float, text: str) -> None:
    assert duration(seconds) == text


UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


@given(st.floats(min_value=0, max_value=400 * 86400, allow_nan=False))
def test_duration_is_within_half_a_unit_of_the_truth(seconds: float) -> None:
    # At most two parts, the second one unit below the first, and the value read back is the
    # seconds rounded to the smallest unit shown.
    parts = duration(seconds).split()
    assert len(parts) in (2, 4)
    values = [(int(parts[i]), parts[i + 1]) for i in range(0, len(parts), 2)]
    order = list(UNITS)
    if len(values) == 2:
        assert order.index(values[1][1]) == order.index(values[0][1]) - 1
    smallest = UNITS[values[-1][1]]
    read = sum(v * UNITS[u] for v, u in values)
    assert abs(read - seconds) <= smallest / 2 + 1e-6
