"""YAML from users, parsed within bounds: size, nesting depth, alias expansion, duplicate keys.

PyYAML's safe loader refuses code, but not a 400-byte "billion laughs" document whose aliases
expand to 9^9 strings (minutes of CPU, gigabytes of memory), nor nesting deep enough to blow the
interpreter's stack, and it lets a repeated key silently replace the first. Here the document is
composed into nodes first (aliases stay shared references, so this is linear in the text), the
node graph is measured — its size *after* alias expansion and its depth — and only a document
within bounds is turned into Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "MAX_NODES", "YamlInputError", "load"]

MAX_DEPTH = 32  # a job spec is 3 deep; a cluster file about 6
MAX_NODES = 100_000  # scalars, sequences and mappings after alias expansion


class YamlInputError(ValueError):
    """A document refused; `line` is 1-based, `message` one line that says the fix."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Loaded:
    data: Any
    root: yaml.Node | None  # for line numbers of keys


def load(
    text: str, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES, duplicates_ok: bool = False
) -> Loaded:
    """The document's data and node tree, or YamlInputError (syntax, duplicate key, too deep, too big).
    `duplicates_ok`: the caller reports duplicate keys itself (with its own field paths)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlInputError(mark.line + 1 if mark else 1, f"YAML syntax: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlInputError(1, f"YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise YamlInputError(1, f"nested more than {max_depth} levels deep") from None
    if root is None:
        return Loaded(None, None)
    _measure(root, max_depth, max_nodes, duplicates_ok)
    try:
        data = yaml.SafeLoader("").construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise YamlInputError(mark.line + 1 if mark else 1, f"YAML: {' '.join(str(exc).split())}") from None
    return Loaded(data, root)


def _measure(root: yaml.Node, max_depth: int, max_nodes: int, duplicates_ok: bool) -> None:
    """Walk the node graph without recursion: depth, expanded size (memoized per shared node, so an
    alias bomb costs its composed size, not its expansion) and duplicate mapping keys."""
    size: dict[int, int] = {}
    # (node, depth, children done?): a node's size is known once its children's are.
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if id(node) in size:
            continue
        if depth > max_depth:
            raise YamlInputError(node.start_mark.line + 1, f"nested more than {max_depth} levels deep")
        children = _children(node, duplicates_ok)
        if not done:
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in children if id(child) not in size)
            continue
        total = 1 + sum(size[id(child)] for child in children)
        if total > max_nodes:
            raise YamlInputError(
                node.start_mark.line + 1,
                f"expands to more than {max_nodes:,} values (aliases repeat what they refer to)",
            )
        size[id(node)] = total


def _children(node: yaml.Node, duplicates_ok: bool) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        out: list[yaml.Node] = []
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and not duplicates_ok:
                if key.value in seen:
                    raise YamlInputError(
                        key.start_mark.line + 1, f"duplicate key {_short(key.value)}: keep only one of them"
                    )
                seen.add(key.value)
            out += [key, value]
        return out
    return []


def _short(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"
