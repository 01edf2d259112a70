"""SimBackend honours the Backend contract the live backends will share."""

from __future__ import annotations

from scheduler.backends.base import Backend, EventKind
from scheduler.backends.sim import SimBackend
from scheduler.clock import VirtualClock
from scheduler.model import Allocation, Job, JobSpec, Node, NodeAllocation, NodeState


def _setup(duration: float = 100.0) -> tuple[VirtualClock, SimBackend, Job, Allocation]:
    clock = VirtualClock()
    nodes = [Node(id="n0", region="r", rack="k", gpu_type="H100")]
    backend = SimBackend(clock, nodes, {"j": duration}, checkpoint_interval_s=30.0, restart_overhead_s=5.0)
    job = Job(id="j", spec=JobSpec(gpus_per_node=2))
    alloc = Allocation(nodes=(NodeAllocation(node="n0", gpus=(0, 1)),))
    return clock, backend, job, alloc


def test_is_a_backend() -> None:
    _, backend, _, _ = _setup()
    assert isinstance(backend, Backend)


def test_started_then_exited_after_the_duration() -> None:
    clock, backend, job, alloc = _setup()
    backend.start(job, alloc)
    assert [e.kind for e in backend.poll()] == [EventKind.STARTED]
    assert backend.next_time() == 100.0
    clock.advance_to(100.0)
    (event,) = backend.poll()
    assert (event.kind, event.exit_code, event.job_id) == (EventKind.EXITED, 0, "j")


def test_stop_keeps_only_checkpointed_work_and_ignores_the_stale_exit() -> None:
    clock, backend, job, alloc = _setup()
    backend.start(job, alloc)
    backend.poll()
    clock.advance_to(70.0)
    backend.stop(job, grace_s=10.0)
    clock.advance_to(80.0)
    assert [e.kind for e in backend.poll()] == [EventKind.STOPPED]
    assert backend.remaining_work("j") == 100.0 - 60.0  # checkpoints at 30 and 60 s of work
    clock.advance_to(200.0)
    assert backend.poll() == []  # the first attempt's exit at t=100 is stale


def test_node_loss_reports_the_node_and_marks_it_down() -> None:
    clock, backend, job, alloc = _setup()
    backend.start(job, alloc)
    backend.fail_node("n0", at=40.0, repair_s=None)
    clock.advance_to(40.0)
    kinds = [e.kind for e in backend.poll()]
    assert EventKind.NODE_LOST in kinds
    assert backend.nodes()[0].state is NodeState.DOWN
    assert backend.remaining_work("j") == 70.0
