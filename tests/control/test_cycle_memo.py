"""The live controller reuses, from cycle to cycle, what decide() derives from the running jobs
alone (ClusterSnapshot.memo, as the simulator does) while they are the same objects. That must
never change a decision: every cycle of a busy controller is decided a second time without the
memo and the two plans must be the same."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from scheduler.backends.base import EventKind
from scheduler.clock import VirtualClock
from scheduler.config.live import parse_live_config
from scheduler.control import controller as controller_module
from scheduler.control.controller import Controller
from scheduler.model.job import JobSpec, JobState
from scheduler.model.plan import Plan
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.config import PolicyConfig
from scheduler.store.store import Store
from tests.control.scripted import ScriptedBackend

# Two queues lending to each other, so that cycles borrow, reclaim, preempt by priority and by
# service level (thresholds low enough to be crossed within the run).
CONFIG = parse_live_config(
    """
regions:
  - name: cn-north
    racks:
      - {name: r1, nodes: 2, gpu_type: H100, gpus_per_node: 8, nvlink_domain_size: 2, cpus: 2, memory_gb: 16}
      - {name: r2, nodes: 2, gpu_type: H100, gpus_per_node: 8, nvlink_domain_size: 2, cpus: 2, memory_gb: 16}
queues:
  - {name: a, cohort: c, quota: {H100: 16}}
  - {name: b, cohort: c, quota: {H100: 16}}
priority_classes:
  - {name: low, value: 0, preempts_lower: false}
  - {name: normal, value: 100}
  - {name: high, value: 1000}
policy:
  default_min_runtime_s: 20
  las_thresholds_gpu_s: [400, 4000]
"""
)


def _plan_facts(plan: Plan) -> tuple[object, ...]:
    pending = sorted((job, reason.code, reason.detail) for job, reason in plan.pending.items())
    return (plan.decisions, pending, plan.examined, plan.fallback, plan.array_limits)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_memo_never_changes_a_cycles_plan(
    store: Store, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[int, bool]] = []  # (running version, memo lent) of each cycle

    def decide_both(snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> Plan:
        plan = real_decide(snapshot, config, now)
        if snapshot.memo is not None:
            fresh = replace(snapshot, memo=None, running_version=-1)
            assert _plan_facts(real_decide(fresh, config, now)) == _plan_facts(plan), now
        compared.append((snapshot.running_version, snapshot.memo is not None))
        return plan

    real_decide = controller_module.decide
    monkeypatch.setattr(controller_module, "decide", decide_both)
    rng = random.Random(seed)
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = Controller(store, backend, CONFIG, clock, min_decide_interval_s=0.0)
    store.sync_queues(list(c.queues.values()))
    c.recover()
    started = stopped = 0
    for _ in range(120):
        for _ in range(rng.choice([0, 0, 1, 2])):
            gpn = rng.choice([1, 2, 4, 8])
            spec = JobSpec(
                command=["true"],
                queue=rng.choice(["a", "b"]),
                priority=rng.choice(["low", "normal", "normal", "high"]),
                gpus_per_node=gpn,
                nodes=rng.choice([1, 1, 2]) if gpn == 8 else 1,
                time_limit_s=rng.choice([None, 300.0, 3600.0]),
                data_region="cn-north",
            )
            store.submit(spec, "team-a", clock.now())
        c.step()
        now = clock.now()
        for job_id, attempt in backend.started[started:]:
            backend.emit(EventKind.STARTED, job_id, attempt, now)
        started = len(backend.started)
        for job_id, attempt, _grace in backend.stopped[stopped:]:
            backend.emit(EventKind.STOPPED, job_id, attempt, now + 1)
        stopped = len(backend.stopped)
        for rec in store.jobs():
            if rec.state is JobState.RUNNING and rng.random() < 0.05:
                backend.emit(EventKind.EXITED, rec.id, rec.job.restart_count, now + 1, code=0)
        clock.advance_to(now + rng.choice([1.0, 5.0, 30.0]))
    c.step()
    lent = [version for version, memo in compared if memo]
    # The memo was lent on every cycle of the loop, and reused: some cycles saw the same running jobs.
    assert len(lent) == len(compared) and len(set(lent)) < len(lent), compared
    kinds = [e.kind for rec in store.jobs() for e in store.events(rec.id)]
    preempted = kinds.count("PREEMPTING")
    assert preempted > 0 and started > 20  # the run exercised preemption, not only placements
