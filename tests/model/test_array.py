"""Job array expressions: Slurm's --array syntax, its cap and every way to get it wrong."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scheduler.model.array import MAX_ARRAY_SIZE, ArrayError, compact, max_running_of, parse_array
from scheduler.model.job import Job, JobSpec


@pytest.mark.parametrize(
    ("text", "indices", "cap"),
    [
        ("0-15", list(range(16)), None),
        ("0-15%4", list(range(16)), 4),
        ("7", [7], None),
        ("1,3,5-9:2", [1, 3, 5, 7, 9], None),
        ("0-10:5%1", [0, 5, 10], 1),
        ("3,1,2,3", [1, 2, 3], None),  # sorted, each index once
        (" 0-2 ", [0, 1, 2], None),
        (f"0-{MAX_ARRAY_SIZE - 1}", list(range(MAX_ARRAY_SIZE)), None),
    ],
)
def test_indices_and_cap(text: str, indices: list[int], cap: int | None) -> None:
    parsed = parse_array(text)
    assert list(parsed.indices) == indices
    assert parsed.max_running == cap
    assert max_running_of(text) == cap


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("5-2", "the range ends before it starts — write 2-5"),
        ("0-15%0", "at least 1 task"),
        ("0-15%x", "the cap after % is a whole number"),
        ("0-4:0", "the step after ':' must be at least 1"),
        ("", "is empty"),
        ("%4", "is empty"),
        ("a-b", "is not an index or a range"),
        ("-3", "is not an index or a range"),
        ("1,,2", "is not an index or a range"),
        ("0-10000", "index 10000 is above the largest, 9999"),
        ("99999999999999999999", "above the largest"),
    ],
)
def test_bad_expressions_name_the_fix(text: str, says: str) -> None:
    with pytest.raises(ArrayError, match=None) as caught:
        parse_array(text)
    assert says in str(caught.value)


def test_submitted_spec_checks_the_array_and_reads_numbers() -> None:
    assert JobSpec.submitted({"command": ["true"], "array": 7}).array == "7"
    assert JobSpec.submitted({"command": ["true"], "array": " 0-3%2 "}).array == "0-3%2"
    with pytest.raises(ValidationError) as caught:
        JobSpec.submitted({"command": ["true"], "array": "5-2"})
    assert "write 2-5" in str(caught.value)
    with pytest.raises(ValidationError):
        JobSpec.submitted({"command": ["true"], "array": True})


def test_compact_is_slurms_short_form() -> None:
    assert compact([3, 4, 5, 6]) == "3-6"
    assert compact([0, 2, 4, 5, 6, 9]) == "0,2,4-6,9"
    assert compact([]) == ""


def test_cap_only_for_tasks() -> None:
    spec = JobSpec(command=["true"], array="0-3%2")
    assert Job(id="1", spec=spec).array_max_running is None  # not a task (never expanded)
    assert Job(id="1", spec=spec, array_id="1", array_index=0).array_max_running == 2
