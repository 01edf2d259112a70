"""A preemptor gets the GPUs it preempted for, also while Ray is still releasing them.

Found under the chaos suite: an urgent 8-GPU job waited 94 s and preempted 44 jobs, some of them
four times. Its victims' GPUs are free in Corral's books the moment their attempts end, but Ray
frees them a moment later; the cycle in between saw the node short of GPUs with nobody leaving it,
so the preemptor preempted a second node, and the first node's GPUs went to the small jobs it had
just preempted, once Ray let go of them — round after round.

Real SQLite store, the real Controller; the scripted backend says what Ray has free per node.
"""

from __future__ import annotations

from scheduler.backends.base import EventKind
from scheduler.clock import VirtualClock
from scheduler.config.live import LiveConfig, parse_live_config
from scheduler.control.controller import Controller
from scheduler.model.job import JobSpec, JobState
from scheduler.store.store import Store
from tests.control.test_hardening import DriftingBackend

CLUSTER = """
regions:
  - name: cn-north
    racks:
      - {name: r1, nodes: 2, gpu_type: H100, gpus_per_node: 8, cpus: 2, memory_gb: 16}
queues:
  - {name: vision, cohort: c, quota: {H100: 8}}
  - {name: nlp, cohort: c, quota: {H100: 8}}
priority_classes:
  - {name: normal, value: 100}
  - {name: high, value: 1000}
policy:
  default_min_runtime_s: 0
"""
CONFIG: LiveConfig = parse_live_config(CLUSTER)
N0, N1 = (n.id for n in CONFIG.cluster.nodes)


def _submit(store: Store, clock: VirtualClock, queue: str, **spec: object) -> str:
    rec, _ = store.submit(JobSpec(command=["true"], queue=queue, **spec), queue, clock.now())  # type: ignore[arg-type]
    return rec.id


def test_a_preemptor_waits_for_the_gpus_ray_is_still_releasing_and_preempts_no_one_else(
    store: Store,
) -> None:
    clock, backend = VirtualClock(1000.0), DriftingBackend(list(CONFIG.cluster.nodes))
    c = Controller(store, backend, CONFIG, clock, min_decide_interval_s=0.0)
    store.sync_queues(list(c.queues.values()))
    c.recover()
    small: dict[str, list[str]] = {}
    for queue in ("vision", "nlp"):  # one queue at a time: each fills a node
        small[queue] = [_submit(store, clock, queue, gpus_per_node=1) for _ in range(8)]
        c.step()
    for job in (*small["vision"], *small["nlp"]):
        backend.emit(EventKind.STARTED, job, 0, clock.now())
    clock.advance_to(1010.0)
    c.step()
    assert all(store.get(j).state is JobState.RUNNING for js in small.values() for j in js)  # type: ignore[union-attr]
    node_of = {j: store.get(j).allocation.node_ids for js in small.values() for j in js}  # type: ignore[union-attr]

    urgent = _submit(store, clock, "vision", gpus_per_node=8, priority="high")
    c.step()
    victims = [job for job, attempt, _ in backend.stopped]
    assert sorted(victims) == sorted(small["vision"])  # its own queue's 8, on one node
    node = node_of[victims[0]][0]
    assert {node_of[v] for v in victims} == {(node,)}

    # The victims end; Ray has not released their GPUs yet.
    clock.advance_to(1012.0)
    for job in victims:
        backend.emit(EventKind.STOPPED, job, 0, clock.now())
    backend.ray_free = {N0: 0.0, N1: 0.0}
    c.step()
    assert [job for job, _, _ in backend.stopped] == victims, "preempted a second node"
    rec = store.get(urgent)
    assert rec is not None and rec.state is JobState.PENDING
    assert rec.pending_reason is not None and "released" in rec.pending_reason, rec.pending_reason
    assert all(store.get(v).state is JobState.PENDING for v in victims)  # type: ignore[union-attr]

    # Ray lets go: the preemptor starts there, before the jobs it preempted.
    backend.ray_free = {node: 8.0, ({N0, N1} - {node}).pop(): 0.0}
    clock.advance_to(1012.5)
    c.step()
    rec = store.get(urgent)
    assert rec is not None and rec.state is JobState.STARTING and rec.allocation is not None
    assert rec.allocation.node_ids == (node,)
    assert all(store.get(v).state is JobState.PENDING for v in victims)  # type: ignore[union-attr]
    assert [job for job, _, _ in backend.stopped] == victims
