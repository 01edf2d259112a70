"""Refuse at submission what can never run here: the checks behind ControllerHandle.check_spec.

A pure function of the spec and the cluster as declared (nodes in any state count: a node that is
down today may come back), so the live controller, the API's tests and `--dry-run` agree. Each
refusal names the spec field and says the fix in one line.

Every submission is checked, so on a large cluster pass a `NodeIndex` (built once per change of the
node set, O(nodes)) instead of the node list: a check is then O(region × GPU type pools).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scheduler.model.cluster import ANY, Node
from scheduler.model.job import JobSpec
from scheduler.model.queue import PriorityClass, Queue
from scheduler.view import SpecError

__all__ = ["NodeIndex", "check_spec"]


@dataclass(frozen=True, slots=True)
class NodeIndex:
    """The cluster's shape: for each (region, GPU type), its nodes' GPU counts in ascending order."""

    pools: dict[tuple[str, str], tuple[int, ...]]

    @classmethod
    def build(cls, nodes: Iterable[Node]) -> NodeIndex:
        pools: dict[tuple[str, str], list[int]] = {}
        for n in nodes:
            pools.setdefault((n.region, n.gpu_type), []).append(n.gpus)
        return cls({key: tuple(sorted(gpus)) for key, gpus in pools.items()})

    @property
    def gpu_types(self) -> set[str]:
        return {t for _, t in self.pools}

    @property
    def regions(self) -> set[str]:
        return {r for r, _ in self.pools}


def _choices(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


def check_spec(
    spec: JobSpec,
    nodes: Sequence[Node] | NodeIndex,
    queues: Iterable[Queue],
    priority_classes: Iterable[PriorityClass],
) -> None:
    """Raise SpecError (field, one-line message with the fix) unless the spec could ever run."""
    index = nodes if isinstance(nodes, NodeIndex) else NodeIndex.build(nodes)
    queue_names = {q.name for q in queues}
    if spec.queue not in queue_names:
        raise SpecError("queue", f"unknown queue {spec.queue!r}: use one of {_choices(queue_names)}")
    classes = {p.name for p in priority_classes}
    if spec.priority not in classes:
        raise SpecError(
            "priority", f"unknown priority class {spec.priority!r}: use one of {_choices(classes)}"
        )
    types = index.gpu_types
    if spec.gpu_type != ANY and spec.gpu_type not in types:
        raise SpecError(
            "gpu_type",
            f"the cluster has no {spec.gpu_type} nodes: use one of {_choices(types)} or 'any'",
        )
    regions = index.regions
    if spec.data_region != ANY and spec.data_region not in regions:
        raise SpecError(
            "data_region",
            f"the cluster has no nodes in region {spec.data_region!r}: use one of {_choices(regions)} "
            "or 'any'",
        )
    fitting = {
        key: gpus
        for key, gpus in index.pools.items()
        if (spec.gpu_type == ANY or key[1] == spec.gpu_type)
        and (spec.data_region == ANY or key[0] == spec.data_region)
    }
    if not fitting:
        there = {t for r, t in index.pools if r == spec.data_region}
        raise SpecError(
            "gpu_type",
            f"region {spec.data_region} has no {spec.gpu_type} nodes: use one of {_choices(there)} or 'any'",
        )
    _check_shape(spec, fitting)


def _check_shape(spec: JobSpec, fitting: dict[tuple[str, str], tuple[int, ...]]) -> None:
    """A gang must fit on `nodes` nodes of one pool (region, GPU type), each with `gpus_per_node`."""
    widest = max(gpus[-1] for gpus in fitting.values())
    where = _where(spec)
    if spec.gpus_per_node > widest:
        raise SpecError(
            "gpus_per_node",
            f"needs {spec.gpus_per_node} GPUs per node but the largest node{where} has {widest}: "
            f"ask for at most {widest} per node and more nodes",
        )
    # nodes of a pool with at least gpus_per_node GPUs: those right of the first such count
    most = max(len(gpus) - bisect_left(gpus, spec.gpus_per_node) for gpus in fitting.values())
    if spec.nodes > most:
        raise SpecError(
            "nodes",
            f"needs {spec.nodes} nodes with {spec.gpus_per_node} GPUs{where} in one region, but at most "
            f"{most} exist: ask for at most {most} nodes (a gang never spans regions or GPU types)",
        )


def _where(spec: JobSpec) -> str:
    parts = []
    if spec.gpu_type != ANY:
        parts.append(f"of type {spec.gpu_type}")
    if spec.data_region != ANY:
        parts.append(f"in {spec.data_region}")
    return (" " + " ".join(parts)) if parts else ""
