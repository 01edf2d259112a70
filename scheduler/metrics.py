"""Every Prometheus metric Corral exports, in one place (Prometheus naming: base units, `_total`
on counters, `_ratio` for 0–1).

Two kinds:
- State gauges (GPUs, nodes, queues, jobs) are recounted at each scrape from the controller's
  latest view by `ClusterCollector`, so a series never outlives what it describes (no stale
  gauges after a job ends, a node leaves or the controller restarts).
- Event counters and histograms (submissions, finishes, preemptions, waits, GPU-seconds, cycles,
  decisions) are incremented by the controller as it commits each step (`observe_*`); like every
  Prometheus counter they restart from zero with the process, which rate() handles.

Label cardinality stays bounded: queues, regions, GPU types, nodes and reasons, never job ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler import __version__
from scheduler.gpu import GpuSample
from scheduler.model.cluster import NodeState
from scheduler.model.job import JobState, PendingCode
from scheduler.model.plan import Place, Plan, Preempt, Reject, Reserve
from scheduler.model.records import JobRecord
from scheduler.view import ClusterView

_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, float("inf"))
_CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))
_HOLDING = (JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING)
_UNFINISHED = tuple(s.value for s in (JobState.PENDING, *_HOLDING))


class ViewSource(Protocol):
    def view(self) -> ClusterView: ...


class AuditSource(Protocol):
    """The store, as the audit metrics read it (Store.audit_head, Store.audit_dropped)."""

    def audit_head(self) -> tuple[int, str] | None: ...

    @property
    def audit_dropped(self) -> int: ...


class Metrics:
    """The controller's metrics in their own registry (served at /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.submitted = Counter("corral_jobs_submitted", "Jobs accepted, by queue.", ["queue"], registry=r)
        self.finished = Counter(
            "corral_jobs_finished",
            "Jobs that ended, by queue and final state.",
            ["queue", "result"],
            registry=r,
        )
        self.preempted = Counter(
            "corral_jobs_preempted",
            "Requeues of running jobs: preempt (for another job) or node_fail (lost a node or its start).",
            ["queue", "reason"],
            registry=r,
        )
        self.wait = Histogram(
            "corral_job_wait_seconds",
            "Time from submission to first start, by queue.",
            ["queue"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.gpu_seconds = Counter(
            "corral_job_gpu_seconds",
            "GPU-seconds used by ended attempts, by queue (chargeback).",
            ["queue"],
            registry=r,
        )
        self.cycle = Histogram(
            "corral_scheduling_cycle_seconds",
            "Time of one decide() cycle.",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "corral_scheduling_decisions", "Decisions made by cycles, by kind.", ["kind"], registry=r
        )
        self.residency = Counter(
            "corral_residency_rejections",
            "Jobs refused a placement by the data-residency rule, by the job's data region.",
            ["region"],
            registry=r,
        )
        self.start_failures = Counter(
            "corral_start_failures",
            "Starts that failed for a transient reason (retried with backoff), by queue.",
            ["queue"],
            registry=r,
        )
        self.store_errors = Counter(
            "corral_store_errors", "Controller steps that failed in the store.", registry=r
        )
        self.residency_conflicts = Gauge(
            "corral_residency_label_conflicts",
            "Nodes out of scheduling because their declared region disagrees with their Kubernetes "
            "node's (or cannot be checked against it).",
            registry=r,
        )
        self.leader = Gauge("corral_leader", "1 on the controller that leads (holds the lease).", registry=r)
        self._attached = False
        build = Gauge("corral_build_info", "Corral's version (always 1).", ["version"], registry=r)
        build.labels(version=__version__).set(1)

    def attach(
        self,
        source: ViewSource,
        leader: Callable[[], bool],
        job_info: bool = False,
        audit: AuditSource | None = None,
    ) -> None:
        """Export the state gauges recounted from `source` at each scrape; `job_info` adds the
        opt-in per-job series (one per job and node while it holds GPUs); `audit` the audit chain's
        head (on the leader) and dropped denials. Only the first call counts: a process whose
        leadership comes and goes attaches once, with a source that follows it."""
        if self._attached:
            return
        self._attached = True
        self.leader.set_function(lambda: 1.0 if leader() else 0.0)
        self.registry.register(ClusterCollector(source, job_info))
        if audit is not None:
            self.registry.register(AuditCollector(audit, leader))

    def attach_gpus(self, samples: Callable[[], Mapping[str, Sequence[GpuSample]]]) -> None:
        """Export measured GPU utilisation and memory (only what `samples` measured)."""
        self.registry.register(GpuCollector(samples))

    def initialize(self, queues: Iterable[str], regions: Iterable[str]) -> None:
        """Create every known label set at 0, so a rate() has a series before the first event."""
        for queue in queues:
            self.submitted.labels(queue=queue)
            self.gpu_seconds.labels(queue=queue)
            self.wait.labels(queue=queue)
            for result in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT):
                self.finished.labels(queue=queue, result=result.value)
            for reason in ("preempt", "node_fail"):
                self.preempted.labels(queue=queue, reason=reason)
            self.start_failures.labels(queue=queue)
        for kind in ("place", "preempt", "reject", "reserve"):
            self.decisions.labels(kind=kind)
        for region in regions:
            self.residency.labels(region=region)

    # --- events ---------------------------------------------------------------------------------
    def observe_submitted(self, rec: JobRecord) -> None:
        self.submitted.labels(queue=rec.job.spec.queue).inc()

    def observe_change(self, old: JobRecord, new: JobRecord) -> None:
        """Count what one committed change of a job means: a first start, a requeue, an end."""
        queue = new.job.spec.queue
        if old.job.first_started_at is None and new.job.first_started_at is not None:
            self.wait.labels(queue=queue).observe(max(0.0, new.job.first_started_at - new.job.submitted_at))
        used = new.job.attained_gpu_s - old.job.attained_gpu_s
        if used > 0:
            self.gpu_seconds.labels(queue=queue).inc(used)
        if new.state is JobState.PENDING and old.state in _HOLDING:
            reason = "preempt" if new.job.preemption_count > old.job.preemption_count else "node_fail"
            self.preempted.labels(queue=queue, reason=reason).inc()
        if new.state.terminal and not old.state.terminal:
            self.finished.labels(queue=queue, result=new.state.value).inc()

    def observe_start_failure(self, queue: str) -> None:
        self.start_failures.labels(queue=queue).inc()

    def observe_cycle(self, seconds: float, plan: Plan) -> None:
        self.cycle.observe(seconds)
        for decision in plan.decisions:
            kind = {Place: "place", Preempt: "preempt", Reject: "reject", Reserve: "reserve"}[type(decision)]
            self.decisions.labels(kind=kind).inc()

    def observe_residency_refusal(self, data_region: str) -> None:
        self.residency.labels(region=data_region).inc()


class ClusterCollector(Collector):
    """State gauges, recounted from the controller's latest view at every scrape."""

    def __init__(self, source: ViewSource, job_info: bool = False) -> None:
        self._source = source
        self._job_info = job_info

    def collect(self) -> Iterator[Metric]:
        view = self._source.view()
        gpus = GaugeMetricFamily(
            "corral_gpus", "GPUs by region, type and state.", labels=["region", "gpu_type", "state"]
        )
        nodes = GaugeMetricFamily("corral_nodes", "Nodes by region and state.", labels=["region", "state"])
        per_node = GaugeMetricFamily(
            "corral_node_gpus_allocated",
            "GPUs held by jobs on each node.",
            labels=["node", "region", "rack", "gpu_type"],
        )
        drift = GaugeMetricFamily(
            "corral_gpu_accounting_drift",
            "GPUs Corral counts free on a node that Ray has not had free for 30 s or more "
            "(held outside Corral); placement treats them as taken.",
            labels=["node"],
        )
        gpu_counts: dict[tuple[str, str, str], int] = {}
        node_counts: dict[tuple[str, str], int] = {}
        for status in view.nodes:
            n = status.node
            down = n.state is NodeState.DOWN
            for state, value in (
                ("total", 0 if down else n.gpus),
                ("allocated", 0 if down else status.used_gpus),
                ("free", 0 if down else max(0, n.gpus - status.used_gpus)),
                ("down", n.gpus if down else 0),
            ):
                key = (n.region, n.gpu_type, state)
                gpu_counts[key] = gpu_counts.get(key, 0) + value
            node_counts[(n.region, n.state.value)] = node_counts.get((n.region, n.state.value), 0) + 1
            per_node.add_metric([n.id, n.region, n.rack, n.gpu_type], status.used_gpus)
            drift.add_metric([n.id], status.drift_gpus)
        for (region, gpu_type, state), value in sorted(gpu_counts.items()):
            gpus.add_metric([region, gpu_type, state], value)
        for (region, state), value in sorted(node_counts.items()):
            nodes.add_metric([region, state], value)
        yield from (gpus, nodes, per_node, drift)
        yield from _queue_families(view)
        jobs = GaugeMetricFamily(
            "corral_jobs", "Unfinished jobs by queue and state.", labels=["queue", "state"]
        )
        for queue in (q.queue.name for q in view.queues):  # zeros included: an idle queue still plots
            for state in _UNFINISHED:
                jobs.add_metric([queue, state], view.jobs_by_state.get((queue, state), 0))
        yield jobs
        if self._job_info:
            # Opt-in, as its cardinality grows with running jobs; a job's series go when it ends.
            info = GaugeMetricFamily(
                "corral_job_info",
                "1 per job and node while the job holds GPUs there.",
                labels=["job_id", "queue", "node"],
            )
            for status in view.nodes:
                for job_id in status.jobs:
                    info.add_metric([job_id, view.job_queues.get(job_id, ""), status.node.id], 1)
            yield info


def _queue_families(view: ClusterView) -> Iterator[Metric]:
    quota = GaugeMetricFamily("corral_queue_quota_gpus", "Nominal quota.", labels=["queue", "gpu_type"])
    used = GaugeMetricFamily("corral_queue_used_gpus", "GPUs its jobs hold.", labels=["queue", "gpu_type"])
    borrowed = GaugeMetricFamily("corral_queue_borrowed_gpus", "GPUs held above its quota.", labels=["queue"])
    pending = GaugeMetricFamily(
        "corral_queue_pending_jobs", "Pending jobs by reason.", labels=["queue", "reason"]
    )
    share = GaugeMetricFamily(
        "corral_queue_fair_share_ratio", "Its share of recent (decayed) GPU usage, 0–1.", labels=["queue"]
    )
    for status in view.queues:
        name = status.queue.name
        for gpu_type in sorted(set(status.queue.quota) | set(status.used)):
            quota.add_metric([name, gpu_type], status.queue.quota.get(gpu_type, 0))
            used.add_metric([name, gpu_type], status.used.get(gpu_type, 0))
        borrowed.add_metric([name], status.borrowed)
        share.add_metric([name], status.fair_share)
    for status in view.queues:
        for code in PendingCode:
            count = view.pending_by_reason.get((status.queue.name, code.value), 0)
            pending.add_metric([status.queue.name, code.value], count)
    yield from (quota, used, borrowed, pending, share)


class AuditCollector(Collector):
    """corral_audit_head_seq (the leader only, read from the store at each scrape: one indexed read)
    and corral_audit_dropped_total (denied requests this process could not record). The head's hash
    is not a label: a label changing at every record would make a new series each time; compare
    `corral audit head` with a stored copy instead (README, "Audit")."""

    def __init__(self, source: AuditSource, leader: Callable[[], bool]) -> None:
        self._source = source
        self._leader = leader

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "corral_audit_dropped",
            "Denied requests not recorded in the audit log (its queue was full or the store down); "
            "the log records each such gap (decision denied-dropped).",
        )
        dropped.add_metric([], self._source.audit_dropped)
        yield dropped
        if not self._leader():
            return
        try:
            head = self._source.audit_head()
        except Exception:  # the store is down: no head this scrape (corral_store_errors_total tells)
            return
        seq = GaugeMetricFamily("corral_audit_head_seq", "Seq of the last record of the audit hash chain.")
        seq.add_metric([], head[0] if head is not None else 0)
        yield seq


class GpuCollector(Collector):
    """corral_gpu_utilization_ratio / corral_gpu_memory_used_bytes, only for GPUs NVML measured."""

    def __init__(self, samples: Callable[[], Mapping[str, Sequence[GpuSample]]]) -> None:
        self._samples = samples

    def collect(self) -> Iterator[Metric]:
        util = GaugeMetricFamily(
            "corral_gpu_utilization_ratio", "Measured GPU utilisation (NVML), 0–1.", labels=["node", "gpu"]
        )
        memory = GaugeMetricFamily(
            "corral_gpu_memory_used_bytes", "Measured GPU memory in use (NVML).", labels=["node", "gpu"]
        )
        for node, samples in sorted(self._samples().items()):
            for sample in samples:
                util.add_metric([node, str(sample.gpu)], min(1.0, max(0.0, sample.utilization_ratio)))
                memory.add_metric([node, str(sample.gpu)], sample.memory_used_bytes)
        yield from (util, memory)
