"""`corral sim --metrics-out`: the live exporter's metric families, sampled over virtual time.

The same `Metrics` counters and histograms are fed by the simulator's job changes, arrivals and
cycles (through `Metrics.observe_*`, exactly as the controller feeds them), and the same
`ClusterCollector` recounts the state gauges from a `ClusterView` built from the simulator's
state, so the dashboards built on the live metrics read a simulation unchanged.

Sampling: like a scraper every `interval_s` of *virtual* time. The state only changes at events,
so when the simulator is about to move its clock to `t`, every boundary `k × interval_s` before
`t` is sampled from the state as it stands (the state since the last event, the value a scrape at
that boundary would have seen); the first boundary is the first at or after the first event, and a
last sample is taken when the run ends.

Output: OpenMetrics text with explicit timestamps (seconds), every series carrying a `policy`
label, so several runs share one file (and `promtool tsdb create-blocks-from openmetrics` can
backfill it). OpenMetrics wants each family's samples together and each series' points together,
in time order; samples are therefore spooled to one temporary file per family as they are taken
and grouped by series (an external, bounded-memory sort) when the file is closed. Nothing is held
in memory per sample. Histogram `_created` samples (wall-clock times) and the process/platform
families (about the simulator process, not the simulated cluster) are left out.
"""

from __future__ import annotations

import heapq
import math
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import RestrictedRegistry
from prometheus_client.utils import floatToGoString

from scheduler.metrics import ClusterCollector, Metrics
from scheduler.model.job import Job, JobState
from scheduler.model.plan import Plan, Reject
from scheduler.model.records import JobRecord
from scheduler.view import ClusterView, NodeStatus, QueueStatus

if TYPE_CHECKING:
    from scheduler.sim.runner import Simulator

_CHUNK_LINES = 500_000  # lines sorted in memory at a time when a family is grouped by series
_RESIDENCY_CODE = "RegionCapacity"


class _Empty:
    def view(self) -> ClusterView:
        return ClusterView(nodes=(), queues=(), priority_classes=(), time=0.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


class MetricsWriter:
    """One `--metrics-out` file, shared by the runs of every policy; `close()` writes it."""

    def __init__(self, path: Path, interval_s: float = 60.0) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be > 0")
        self.path = path
        self.interval_s = interval_s
        self._spool_dir = tempfile.TemporaryDirectory(prefix="corral-metrics-")
        self._families: dict[str, tuple[str, str]] = {}  # name → (type, help), in export order
        self._spools: dict[str, IO[str]] = {}
        self._series: dict[str, dict[tuple[tuple[str, str], ...], int]] = {}
        live = Metrics()  # the live exporter's families, in its order
        for family in [*live.registry.collect(), *ClusterCollector(_Empty()).collect()]:
            if family.name.startswith("corral_"):
                self._families.setdefault(family.name, (family.type, family.documentation))
        self.samples = 0  # sampled instants, all runs together
        self._prefixes: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}

    def recorder(self, policy: str) -> SimMetrics:
        return SimMetrics(self, policy)

    def write(self, families: Iterable[Metric], policy: str, timestamp: float) -> None:
        """Spool one sampled instant: every sample of every family, `policy` added to its labels."""
        ts = repr(float(timestamp))
        self.samples += 1
        prefixes = self._prefixes
        for family in families:
            spool = self._spool(family)
            lines = []
            for s in family.samples:
                key = (policy, s.name, tuple(s.labels.items()))
                prefix = prefixes.get(key)
                if prefix is None:
                    if s.name.endswith("_created"):  # wall-clock creation times: meaningless here
                        continue
                    prefix = prefixes[key] = self._prefix(family.name, s.name, {**s.labels, "policy": policy})
                lines.append(f"{prefix}{_value(s.value)} {ts}\n")
            spool.writelines(lines)

    def _prefix(self, family: str, name: str, labels: dict[str, str]) -> str:
        """`sid<TAB>name{labels} ` for a new sample; sid numbers its series within the family."""
        series = self._series[family]
        group = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        sid = series.get(group)
        if sid is None:
            sid = series[group] = len(series)
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        return f"{sid}\t{name}{{{text}}} "

    def _spool(self, family: Metric) -> IO[str]:
        spool = self._spools.get(family.name)
        if spool is None:
            self._families.setdefault(family.name, (family.type, family.documentation))
            spool = open(  # noqa: SIM115 - closed in close()
                Path(self._spool_dir.name) / f"{len(self._spools)}.spool", "w+", encoding="utf-8"
            )
            self._spools[family.name] = spool
            self._series[family.name] = {}
        return spool

    def close(self, write: bool = True) -> None:
        """Write the file: each family's HELP/TYPE once, its samples grouped by series, `# EOF`."""
        try:
            if not write:
                return
            with self.path.open("w", encoding="utf-8") as out:
                for name, (typ, doc) in self._families.items():
                    out.write(f"# HELP {name} {_escape_help(doc)}\n# TYPE {name} {typ}\n")
                    spool = self._spools.get(name)
                    if spool is not None:
                        spool.flush()
                        spool.seek(0)
                        out.writelines(self._grouped(spool))
                out.write("# EOF\n")
        finally:
            for spool in self._spools.values():
                spool.close()
            self._spools.clear()
            self._spool_dir.cleanup()

    def _grouped(self, spool: IO[str]) -> Iterator[str]:
        """The spooled lines ordered by series; a series keeps its time order (stable sort)."""
        runs: list[IO[str]] = []
        while True:
            chunk = [line for _, line in zip(range(_CHUNK_LINES), spool, strict=False)]
            if not chunk:
                break
            chunk.sort(key=_sid)
            if not runs and len(chunk) < _CHUNK_LINES:
                yield from (line.split("\t", 1)[1] for line in chunk)
                return
            run: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8", dir=self._spool_dir.name)  # noqa: SIM115
            run.writelines(chunk)
            run.seek(0)
            runs.append(run)
        try:
            for line in heapq.merge(*runs, key=_sid):  # stable: earlier runs first on ties
                yield line.split("\t", 1)[1]
        finally:
            for run in runs:
                run.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(write=exc_type is None)


def _value(value: float) -> str:
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value)}.0"
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _sid(line: str) -> int:
    return int(line[: line.index("\t")])


def _restricted(metrics: Metrics) -> RestrictedRegistry:
    """The registry without the process and platform families (they describe this process)."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.name.startswith("corral_"):
            names.update(family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum"))
    return metrics.registry.restricted_registry(sorted(names))


def _families(registry: RestrictedRegistry, source: _Empty | SimMetrics) -> Iterator[Metric]:
    yield from registry.collect()
    yield from ClusterCollector(source).collect()


class SimMetrics:
    """Records one simulator run (one policy): the simulator calls its hooks as it goes."""

    def __init__(self, writer: MetricsWriter, policy: str) -> None:
        self.writer = writer
        self.policy = policy
        self.interval_s = writer.interval_s
        self.metrics = Metrics()
        self.metrics.leader.set(1)  # the simulator is the one active controller
        self._registry = _restricted(self.metrics)
        self._next = math.nan  # next boundary to sample; NaN before the first event
        self._last_sampled = -math.inf
        self._plan: Plan | None = None
        self._sim: Simulator | None = None
        self._now = 0.0

    # --- hooks the simulator calls ------------------------------------------------------------
    def before(self, sim: Simulator, t: float) -> None:
        """The clock is about to move to `t`: sample every boundary before it from the state now."""
        if math.isnan(self._next):
            self._start(sim)
            self._next = math.ceil(t / self.interval_s) * self.interval_s
            return
        while self._next < t:
            self._sample(sim, self._next)
            self._next += self.interval_s

    def submitted(self, job: Job) -> None:
        self.metrics.observe_submitted(JobRecord(job))

    def changed(self, old: Job, new: Job) -> None:
        self.metrics.observe_change(JobRecord(old), JobRecord(new))

    def cycled(self, sim: Simulator, seconds: float, plan: Plan) -> None:
        """One decide(): `seconds` is its wall time, as the live controller measures it."""
        self.metrics.observe_cycle(seconds, plan)
        self._plan = plan
        for decision in plan.decisions:
            if isinstance(decision, Reject) and decision.reason.startswith(_RESIDENCY_CODE):
                self.metrics.observe_residency_refusal(sim.jobs[decision.job_id].spec.data_region)

    def finish(self, sim: Simulator) -> None:
        """The run ended: sample the boundaries up to now, and now itself (the final counters)."""
        now = sim.clock.now()
        if math.isnan(self._next):
            self._start(sim)
            self._next = math.ceil(now / self.interval_s) * self.interval_s
        while self._next <= now:
            self._sample(sim, self._next)
            self._next += self.interval_s
        if self._last_sampled < now:
            self._sample(sim, now)

    def _start(self, sim: Simulator) -> None:
        # Series at 0 before their first event, as the live exporter does.
        self.metrics.initialize(list(sim.queues), sorted({n.region for n in sim.nodes.values()}))

    # --- sampling -----------------------------------------------------------------------------
    def _sample(self, sim: Simulator, at: float) -> None:
        self._sim, self._now = sim, at
        self.writer.write(_families(self._registry, self), self.policy, at)
        self._last_sampled = at

    def view(self) -> ClusterView:
        """The simulator's state as the controller would publish it (ViewSource for the collector)."""
        sim, now = self._sim, self._now
        assert sim is not None
        used: dict[str, int] = {}
        q_running: dict[str, int] = {}
        by_state: dict[tuple[str, str], int] = {}
        for r in sim.running.values():
            queue = r.queue
            q_running[queue] = q_running.get(queue, 0) + 1
            key = (queue, r.job.state.value)
            by_state[key] = by_state.get(key, 0) + 1
            for na in r.allocation.nodes:
                used[na.node] = used.get(na.node, 0) + len(na.gpus)
        usage = {q: u.value_at(now) for q, u in sim.usage.items()}
        queues = []
        for name, q in sim.queues.items():
            by_type = {t: g for t, g in sim.queue_usage.get(name, {}).items() if g > 0}
            pending = len(sim.pending[name])
            if pending:
                by_state[(name, JobState.PENDING.value)] = pending
            queues.append(QueueStatus.of(q, by_type, pending, q_running.get(name, 0), usage))
        return ClusterView(
            nodes=tuple(NodeStatus(sim.nodes[i], used.get(i, 0)) for i in sorted(sim.nodes)),
            queues=tuple(queues),
            priority_classes=tuple(sim.priority_classes.values()),
            time=now,
            jobs_by_state=by_state,
            pending_by_reason=self._pending_by_reason(sim),
        )

    def _pending_by_reason(self, sim: Simulator) -> dict[tuple[str, str], int]:
        """Pending jobs by the code of the last cycle's reason; unexamined ones get its fallback.

        Every change is followed by a cycle, so the jobs pending now are the ones that cycle saw;
        only the jobs it examined (bounded by the scan depth) are visited here.
        """
        plan = self._plan
        counts: dict[tuple[str, str], int] = {}
        explained: dict[str, int] = {}
        if plan is not None:
            for job_id, reason in plan.pending.items():
                job = sim.jobs.get(job_id)
                if job is None or job.state is not JobState.PENDING:
                    continue
                queue = job.spec.queue
                key = (queue, reason.code.value)
                counts[key] = counts.get(key, 0) + 1
                explained[queue] = explained.get(queue, 0) + 1
        fallback = plan.fallback.code.value if plan is not None else "WaitingForScheduling"
        for queue, jobs in sim.pending.items():
            rest = len(jobs) - explained.get(queue, 0)
            if rest > 0:
                counts[(queue, fallback)] = counts.get((queue, fallback), 0) + rest
        return counts
