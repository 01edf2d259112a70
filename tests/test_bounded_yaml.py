"""Bounded YAML: hostile documents are refused fast, with the line and the fix; good ones load."""

from __future__ import annotations

import time

import pytest

from scheduler.bounded_yaml import MAX_DEPTH, YamlInputError, load
from scheduler.config.cluster_file import ClusterFileError, parse_cluster


def _bomb(levels: int) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_by_its_expanded_size_without_expanding_it() -> None:
    t0 = time.monotonic()
    with pytest.raises(YamlInputError, match="expands to more than 100,000 values") as caught:
        load(_bomb(9))  # 9^9 strings once expanded
    assert time.monotonic() - t0 < 1.0
    assert caught.value.line == 6  # the first level past the bound: 9^6 > 100,000


def test_a_few_aliases_are_fine() -> None:
    assert load(_bomb(3)).data["l2"] == [[["x"] * 9] * 9] * 9
    assert load("base: &b {gpus: 8}\njob: {<<: *b, name: x}\n").data["job"] == {"gpus": 8, "name": "x"}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_deep_nesting_is_refused(depth: int) -> None:
    with pytest.raises(YamlInputError, match=f"nested more than {MAX_DEPTH} levels"):
        load("a: " + "[" * depth + "]" * depth)


def test_nesting_within_the_bound_loads() -> None:
    depth = MAX_DEPTH - 1
    data = load("[" * depth + "]" * depth).data
    for _ in range(depth - 1):
        data = data[0]
    assert data == []


def test_duplicate_keys_are_refused_with_their_line() -> None:
    with pytest.raises(YamlInputError, match="duplicate key 'gpus'") as caught:
        load("name: a\ngpus: 1\nenv: {}\ngpus: 8\n")
    assert caught.value.line == 4


def test_a_cluster_file_alias_bomb_is_one_line() -> None:
    with pytest.raises(ClusterFileError, match=r"^c.yaml:6: expands to more than") as caught:
        parse_cluster(_bomb(9), "c.yaml")
    assert "\n" not in str(caught.value)
