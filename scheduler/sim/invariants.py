"""The invariants of DESIGN.md §7 that a simulated cluster can break, checked on demand.

Tests run this after every simulated event; a violation raises InvariantViolation naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.model.cluster import ANY
from scheduler.model.job import JobState

if TYPE_CHECKING:
    from scheduler.sim.runner import Simulator


class InvariantViolation(AssertionError):
    pass


def check_invariants(sim: Simulator) -> None:
    held: dict[tuple[str, int], str] = {}
    usage: dict[str, dict[str, int]] = {}
    for r in sim.running.values():
        spec = r.job.spec
        # 2. Gangs are all-or-nothing: every node of the gang, each with its GPUs.
        if len(r.allocation.nodes) != spec.nodes or any(
            len(na.gpus) != spec.gpus_per_node for na in r.allocation.nodes
        ):
            raise InvariantViolation(f"job {r.id} holds a partial gang: {r.allocation}")
        if len({na.node for na in r.allocation.nodes}) != spec.nodes:
            raise InvariantViolation(f"job {r.id} uses a node twice")
        for na in r.allocation.nodes:
            node = sim.nodes[na.node]
            # 6. Data residency.
            if spec.data_region not in (ANY, node.region):
                raise InvariantViolation(f"job {r.id} of region {spec.data_region} runs on {na.node}")
            if spec.gpu_type not in (ANY, node.gpu_type):
                raise InvariantViolation(f"job {r.id} wants {spec.gpu_type}, runs on {node.gpu_type}")
            for g in na.gpus:
                # 1. No GPU held by two jobs; 8. nothing beyond a node's GPUs.
                if not 0 <= g < node.gpus:
                    raise InvariantViolation(f"job {r.id} holds GPU {g} of {na.node}, which has {node.gpus}")
                other = held.setdefault((na.node, g), r.id)
                if other != r.id:
                    raise InvariantViolation(f"GPU {g} of {na.node} is held by {other} and {r.id}")
        if r.job.state not in (JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING):
            raise InvariantViolation(f"job {r.id} holds GPUs in state {r.job.state.value}")
        per_type = usage.setdefault(r.queue, {})
        per_type[r.gpu_type] = per_type.get(r.gpu_type, 0) + r.gpus
    # The free-GPU index agrees with the allocations (no GPU both free and held).
    for node_id, free in sim.capacity.iter_free():
        for g in free:
            if (node_id, g) in held:
                raise InvariantViolation(f"GPU {g} of {node_id} is free and held by {held[(node_id, g)]}")
    if usage != {q: {t: g for t, g in u.items() if g} for q, u in sim.queue_usage.items() if any(u.values())}:
        raise InvariantViolation(f"queue usage {sim.queue_usage} disagrees with allocations {usage}")
    _check_quota(sim, usage)
    for queue, jobs in sim.pending.items():
        for job in jobs:
            if job.state is not JobState.PENDING or job.spec.queue != queue:
                raise InvariantViolation(f"job {job.id} in queue {queue} is {job.state.value}")
    total = sum(n.gpus for n in sim.nodes.values())
    if len(held) > total:
        raise InvariantViolation(f"{len(held)} GPUs allocated of {total}")


def _check_quota(sim: Simulator, usage: dict[str, dict[str, int]]) -> None:
    # 3. Usage ≤ nominal + borrowed; borrowed ≤ borrowing limit; a cohort never exceeds its quota.
    cohort_use: dict[tuple[str, str], int] = {}
    cohort_nominal: dict[tuple[str, str], int] = {}
    for q in sim.queues.values():
        used = usage.get(q.name, {})
        borrowed = sum(max(0, g - q.nominal(t)) for t, g in used.items())
        if q.cohort is None and borrowed:
            raise InvariantViolation(f"queue {q.name} has no cohort but uses {used} over quota {q.quota}")
        if q.borrowing_limit is not None and borrowed > q.borrowing_limit:
            raise InvariantViolation(f"queue {q.name} borrows {borrowed} > limit {q.borrowing_limit}")
        if q.cohort is not None:
            for t in set(used) | set(q.quota):
                key = (q.cohort, t)
                cohort_use[key] = cohort_use.get(key, 0) + used.get(t, 0)
                cohort_nominal[key] = cohort_nominal.get(key, 0) + q.nominal(t)
    for key, in_use in cohort_use.items():
        if in_use > cohort_nominal[key]:
            raise InvariantViolation(
                f"cohort {key[0]} uses {in_use} {key[1]} > its quota {cohort_nominal[key]}"
            )
