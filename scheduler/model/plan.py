"""A scheduling cycle's output: typed decisions, each with its reason, plus why the others wait."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.model.job import PendingCode, PendingReason


class NodeAllocation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    node: str
    gpus: tuple[int, ...]  # GPU indices on that node


class Allocation(BaseModel):
    """Which GPUs of which nodes a job holds: the unit of truth for 'who holds which GPU'.

    `borrowed_gpus`: how many of them were above its queue's nominal quota when it was placed
    (borrowed from the cohort). Such a job may always be reclaimed by a lending queue, whatever
    protection it asked for (Kueue's rule): protection is only granted on a queue's own quota.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: tuple[NodeAllocation, ...]
    borrowed_gpus: int = Field(default=0, ge=0)

    @property
    def gpus(self) -> int:
        return sum(len(n.gpus) for n in self.nodes)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.node for n in self.nodes)


class Place(BaseModel):
    """Start `job_id` on `allocation`. `residency` records the data-region check it passed (audit)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["place"] = "place"
    job_id: str
    allocation: Allocation
    borrowed_gpus: int = 0
    backfilled: bool = False
    residency: str = ""
    reason: str = ""


PREEMPT_RULES = ("priority", "reclaim", "service")
"""Why a job may be preempted: for a higher priority class, for a queue taking back its lent quota,
or for a job with less attained service (Tiresias)."""


class Preempt(BaseModel):
    """Stop `job_id` (with its grace period) so that `for_job` can start; it is requeued.

    `rule` is what the victim's team may be told (PREEMPT_RULES, joined by "," if several, in that
    order); `reason` names jobs and queues and is for administrators only.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["preempt"] = "preempt"
    job_id: str
    for_job: str
    reason: str
    rule: str = "priority"

    @field_validator("rule")
    @classmethod
    def _check_rule(cls, value: str) -> str:
        parts = value.split(",")
        if not parts or any(p not in PREEMPT_RULES for p in parts) or len(set(parts)) != len(parts):
            raise ValueError(f"must be one or more of {','.join(PREEMPT_RULES)} joined by ',', got {value!r}")
        return value


class Reserve(BaseModel):
    """Hold `nodes` for `job_id` from `start` (EASY backfill's head-of-line reservation)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["reserve"] = "reserve"
    job_id: str
    nodes: tuple[str, ...]
    start: float | None  # None: no running job has a time limit, so the start cannot be bounded


class Reject(BaseModel):
    """The job can never run on this cluster as specified (e.g. its region holds too few GPUs)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["reject"] = "reject"
    job_id: str
    reason: str


Decision = Place | Preempt | Reserve | Reject


class Plan(BaseModel):
    """Decisions in the order they were made, and a pending reason for every job examined."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    decisions: tuple[Decision, ...] = Field(default=())
    pending: Mapping[str, PendingReason] = Field(default_factory=dict)
    examined: int = 0  # jobs the cycle looked at (bounded by the policy's scan depth)
    fallback: PendingReason = PendingReason(PendingCode.PRIORITY, "behind higher-ordered jobs")
    # Job arrays at their `%N` cap: why each of their pending tasks waits, examined or not.
    array_limits: Mapping[str, PendingReason] = Field(default_factory=dict)

    @property
    def places(self) -> list[Place]:
        return [d for d in self.decisions if isinstance(d, Place)]

    @property
    def preempts(self) -> list[Preempt]:
        return [d for d in self.decisions if isinstance(d, Preempt)]

    @property
    def rejects(self) -> list[Reject]:
        return [d for d in self.decisions if isinstance(d, Reject)]

    @property
    def reserves(self) -> list[Reserve]:
        return [d for d in self.decisions if isinstance(d, Reserve)]

    def reason_for(self, job_id: str, array_id: str | None = None) -> PendingReason:
        """Why `job_id` (a task of `array_id`, if given) waits; jobs past the scan depth wait behind
        others (Slurm's 'Priority'), or for their array's cap."""
        found = self.pending.get(job_id)
        if found is None and array_id is not None:
            found = self.array_limits.get(array_id)
        return found or self.fallback
