"""A JobSpec from what the Python client's `submit` is given, with the CLI's shorthand rules
(scheduler/cli/spec_input.py uses `gang_shape` from here, so both read `gpus` the same way):

    gpus: 16   → 2 nodes × 8 GPUs (≤ 8: one node; else whole 8-GPU nodes, unless gpus_per_node
                 names the node width, or nodes the count)
    command: "python train.py --lr 3e-4"  → split as a shell would (shlex); a list is kept as it is
    working_dir: the current directory unless given (as with `corral submit` and Slurm's sbatch)
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from scheduler.client.errors import InvalidSpec
from scheduler.model.job import MAX_NODES_PER_JOB, JobSpec

__all__ = ["DEFAULT_NODE_GPUS", "ShapeError", "build_spec", "gang_shape"]

DEFAULT_NODE_GPUS = 8  # the node width assumed for `gpus` when none is given


class ShapeError(ValueError):
    """A GPU count that makes no gang shape (the message names `where` and the fix)."""


def gang_shape(gpus: int, nodes: int | None, width: int | None, where: str) -> tuple[int, int]:
    """(nodes, gpus_per_node) for a total of `gpus`; `width` is the node's GPUs when known."""
    if gpus < 1:
        raise ShapeError(f"{where}: must be ≥ 1 (got {gpus}) — ask for at least 1 GPU")
    if nodes is not None:
        if nodes < 1 or gpus % nodes:
            raise ShapeError(
                f"{where}: {gpus} GPUs do not split evenly over {nodes} nodes — "
                "give a multiple of --nodes, or use --gpus-per-node instead of --gpus"
            )
        return nodes, gpus // nodes
    node_gpus = width or DEFAULT_NODE_GPUS
    if gpus <= node_gpus:
        return 1, gpus
    if gpus % node_gpus:
        raise ShapeError(
            f"{where}: {gpus} GPUs is more than one {node_gpus}-GPU node and not a whole number of them — "
            f"use --nodes N --gpus-per-node G (e.g. --nodes {math.ceil(gpus / node_gpus)} "
            f"--gpus-per-node {node_gpus})"
        )
    count = gpus // node_gpus
    if count > MAX_NODES_PER_JOB:
        raise ShapeError(
            f"{where}: {gpus} GPUs would need {count} nodes of {node_gpus} GPUs; a job spans at most "
            f"{MAX_NODES_PER_JOB} nodes — ask for fewer GPUs"
        )
    return count, node_gpus


def build_spec(spec: JobSpec | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body to submit: `spec` (a JobSpec or a mapping of its fields) with `fields` over it.
    InvalidSpec (with `.field`) for a shape the shorthands cannot make or a spec that is not one."""
    if isinstance(spec, JobSpec):
        data: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    elif spec is None:
        data = {}
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise InvalidSpec(f"spec: must be a JobSpec or a mapping (got {type(spec).__name__})", field="spec")
    data.update({k: v for k, v in fields.items() if v is not None})
    if isinstance(data.get("command"), str):
        data["command"] = shlex.split(data["command"])
    if "gpus" in data:
        raw = data.pop("gpus")
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise InvalidSpec(f"gpus: must be a whole number (got {raw!r})", field="gpus")
        nodes, width = data.get("nodes"), data.get("gpus_per_node")
        try:
            data["nodes"], data["gpus_per_node"] = gang_shape(
                raw,
                nodes if isinstance(nodes, int) else None,
                width if isinstance(width, int) else None,
                "gpus",
            )
        except ShapeError as exc:
            raise InvalidSpec(str(exc), field="gpus") from None
    data.setdefault("working_dir", os.getcwd())
    try:
        checked = JobSpec.submitted(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        raise InvalidSpec(f"spec.{where}: {err['msg']}", field=where.split(".", 1)[0]) from None
    return checked.model_dump(mode="json", exclude_defaults=True)
