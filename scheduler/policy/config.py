"""Every policy knob in one validated, frozen config (scheduler/config reads it from files and env)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PolicyName = Literal["corral", "fifo", "sjf", "las"]
POLICY_NAMES: tuple[PolicyName, ...] = ("corral", "fifo", "sjf", "las")


class PolicyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: PolicyName = "corral"
    # Ordering (Slurm multifactor-like): score = class value + waited / aging_s_per_point
    #                                           - fair_share_weight × (queue's weighted share).
    aging_s_per_point: float = Field(default=36.0, gt=0)
    fair_share_weight: float = Field(default=1000.0, ge=0)
    usage_half_life_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # How many pending jobs one cycle looks at (Slurm's bf_max_job_test); the rest wait as 'Priority'.
    scan_depth: int = Field(default=1000, ge=1)
    backfill: bool = True
    # A reservation whose start cannot be bounded (the jobs it waits for have no time limit) idles
    # the reserved nodes for an unknown time: take it only once the head job has waited this long.
    # Never (inf) starves a big gang behind small jobs without limits. 30 min, measured on the
    # Philly trace (448 GPUs): first 10,000 jobs, the largest gangs' worst wait 1.0 h instead of
    # 15.7 h; whole trace, p99 wait 84 h instead of 131 h for +1.5% average JCT. It bounds such a
    # gang's wait by 30 min + the longest job running where it reserves.
    reserve_unbounded_after_s: float = Field(default=1800.0, ge=0)
    # Preemption for higher priority classes and for queues reclaiming lent quota.
    preemption: bool = True
    max_preemptions_per_job: int = Field(default=10, ge=0)  # past this a job is no longer a victim
    default_min_runtime_s: float = Field(default=600.0, ge=0)  # protects new starts from churn
    preemption_backoff: float = Field(default=4.0, ge=1.0)  # protection × this per earlier preemption
    max_preemptors_per_cycle: int = Field(default=8, ge=0)
    max_victims: int = Field(default=64, ge=1)
    # Discretized 2D LAS service levels (GPU-seconds) that 'corral' weighs within a class.
    las_thresholds_gpu_s: tuple[float, ...] = (3600.0, 36000.0)
    # The 'las' baseline's queues: Tiresias' own dlas-gpu thresholds, so that it is Tiresias-L.
    las_baseline_thresholds_gpu_s: tuple[float, ...] = (3250.0, 7200.0)
    las_min_runtime_s: float = Field(
        default=60.0, ge=0
    )  # las: a job runs this long before it may lose its GPUs
    service_level_weight: float = Field(default=30000.0, ge=0)  # corral: score points per service level
    service_preemption: bool = True  # corral: long-running jobs yield to waiting short ones
