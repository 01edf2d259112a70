"""What a simulation run produces: one record per job, a timeline, and allocation events."""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.model.job import JobSpec


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a workload trace: when it arrives, how long it runs alone, and its spec."""

    job_id: str
    submit_time: float  # seconds from the start of the trace
    duration: float  # seconds of work on its GPUs (the oracle runtime)
    spec: JobSpec


@dataclass(frozen=True, slots=True)
class JobRecord:
    """How one job fared in a run."""

    job_id: str
    queue: str
    gpus: int
    submit_time: float
    first_start: float
    finish_time: float
    duration: float  # its own runtime (no queueing, no lost work)
    preemptions: int = 0
    end_state: str = "SUCCEEDED"

    @property
    def jct(self) -> float:
        return self.finish_time - self.submit_time

    @property
    def wait(self) -> float:
        """Queueing delay: submit → first start."""
        return self.first_start - self.submit_time


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    time: float
    allocated_gpus: int
    pending_jobs: int
    running_jobs: int


@dataclass(frozen=True, slots=True)
class AllocationSpan:
    """One stretch of a job on its GPUs, for --events-out."""

    job_id: str
    start: float
    end: float
    end_reason: str  # completed | preempted | node_failure | timeout
    allocation: tuple[tuple[str, str, str, str, tuple[int, ...]], ...]  # (node, region, rack, gpu_type, gpus)


@dataclass(frozen=True, slots=True)
class PreemptionRecord:
    """One preemption, attributed as the live controller's history attributes it
    (scheduler.policy.explain.why_preempted): the victim's words, and whom it made room for."""

    time: float
    job_id: str
    for_job: str
    rule: str  # PREEMPT_RULES, joined by "," if several
    message: str  # what the victim's team reads: the rule and the work lost, never who
    private_detail: str  # for an admin or the preemptor's team: the other job and its queue
    lost_s: float  # running time since its last checkpoint


@dataclass(slots=True)
class RunResult:
    """Everything one policy's replay produced."""

    policy: str
    total_gpus: int
    records: list[JobRecord] = field(default_factory=list)
    timeline: list[TimelinePoint] = field(default_factory=list)
    spans: list[AllocationSpan] = field(default_factory=list)
    preemptions: int = 0
    preemption_log: list[PreemptionRecord] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    cycles: int = 0
    wall_s: float = 0.0
