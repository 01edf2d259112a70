"""Queues, priority classes and the cluster file that declares them with the nodes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduler.model.cluster import Node
from scheduler.model.job import MAX_TIME_S, JobSpec


class PriorityClass(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    value: int
    preempts_lower: bool = True  # may this class preempt jobs of a lower class?


DEFAULT_PRIORITY_CLASSES: tuple[PriorityClass, ...] = (
    PriorityClass(name="low", value=0, preempts_lower=False),
    PriorityClass(name="normal", value=100),
    PriorityClass(name="high", value=1000),
)


class Queue(BaseModel):
    """A team's queue (Kueue's ClusterQueue). Quotas are in GPUs per GPU type.

    `borrowing_limit`: most GPUs (all types together) it may use above its quota from its cohort's
    idle quota; None = no limit. `lending_limit`: most of its idle quota others may borrow; None = all.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    cohort: str | None = None
    quota: dict[str, int] = Field(default_factory=dict)
    borrowing_limit: int | None = Field(default=None, ge=0)
    lending_limit: int | None = Field(default=None, ge=0)
    weight: float = Field(default=1.0, gt=0)
    # Given to a job submitted without a time limit (Slurm's partition DefaultTime); None: the
    # cluster's default. Limits let EASY backfill bound when a waiting gang can start.
    default_time_limit_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_quota(self) -> Queue:
        for gpu_type, gpus in self.quota.items():
            if gpus < 0:
                raise ValueError(f"quota for {gpu_type} must be ≥ 0, got {gpus}")
        return self

    def nominal(self, gpu_type: str) -> int:
        return self.quota.get(gpu_type, 0)


class ClusterConfig(BaseModel):
    """A whole cluster: its nodes, queues and priority classes (what the cluster file describes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: tuple[Node, ...]
    queues: tuple[Queue, ...]
    priority_classes: tuple[PriorityClass, ...] = DEFAULT_PRIORITY_CLASSES
    default_time_limit_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S, allow_inf_nan=False)

    @model_validator(mode="after")
    def _unique_names(self) -> ClusterConfig:
        for what, names in (
            ("node", [n.id for n in self.nodes]),
            ("queue", [q.name for q in self.queues]),
            ("priority class", [p.name for p in self.priority_classes]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"duplicate {what} name {name!r}")
                seen.add(name)
        return self

    @property
    def gpu_types(self) -> frozenset[str]:
        return frozenset(n.gpu_type for n in self.nodes)

    @property
    def regions(self) -> frozenset[str]:
        return frozenset(n.region for n in self.nodes)

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)


def with_defaults(spec: JobSpec, cluster: ClusterConfig) -> JobSpec:
    """The spec as it is accepted: without a time limit it gets its queue's default, else the
    cluster's (None stays None when neither is set)."""
    if spec.time_limit_s is not None:
        return spec
    queue = next((q for q in cluster.queues if q.name == spec.queue), None)
    limit = queue.default_time_limit_s if queue is not None else None
    if limit is None:
        limit = cluster.default_time_limit_s
    return spec if limit is None else spec.model_copy(update={"time_limit_s": limit})
