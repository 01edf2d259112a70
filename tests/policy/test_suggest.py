"""Counterfactual reasons: every suggestion starts the job, none leaves its region or its queues."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler.model.cluster import ANY, Node
from scheduler.model.job import Job
from scheduler.model.plan import Place, Plan
from scheduler.model.queue import Queue
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.suggest import KINDS, Suggestion, suggest
from tests.builders import cluster, job, node, queue, running, snapshot

CONFIG = PolicyConfig()
CN = cluster(racks=1, nodes_per_rack=2, region="cn-north")  # 2 × 8 H100
CN_A100 = [node("cn-a", region="cn-north", rack="cn/a", gpu_type="A100")]
EU_A100 = [node("eu-a", region="eu-west", rack="eu/a", gpu_type="A100")]
NODES = CN + CN_A100 + EU_A100
N0, N1 = CN[0].id, CN[1].id


def hold(
    job_id: str, node_id: str, gpus: Sequence[int], queue_name: str = "default", t: float = 0.0
) -> RunningJob:
    j = job(job_id).queue(queue_name).gpus(len(gpus)).time_limit(3600).build()
    return running(j, [(node_id, tuple(gpus))], t, on=NODES)


def places(plan: Plan, job_id: str) -> Place | None:
    return next((d for d in plan.places if d.job_id == job_id), None)


def applied(
    nodes: Sequence[Node],
    pending: Sequence[Job],
    held: Sequence[RunningJob],
    queues: Sequence[Queue] | None,
    target: Job,
    s: Suggestion,
) -> Place | None:
    """Build the changed world from scratch (not with suggest's own helper) and run one cycle."""
    changed = target.model_copy(update={"spec": target.spec.model_copy(update=dict(s.change))})
    world = [changed if j.id == target.id else j for j in pending]
    plan = decide(snapshot(nodes, world, held, queues=queues), CONFIG, 10.0)
    return places(plan, target.id)


def test_fewer_gpus_when_a_node_is_half_busy() -> None:
    held = [hold("h0", N0, range(8)), hold("h1", N1, range(4))]
    want = job("j").region("cn-north").gpu_type("H100").gpus(8).submitted(5).build()
    snap = snapshot(NODES, [want], held)
    found = suggest(snap, CONFIG, 10.0, want)
    assert [s.flag for s in found] == ["--gpus 4", "--gpu-type A100"]
    assert found[0].text == "fits now with `--gpus 4` (4 GPUs instead of 8)"
    assert found[0].change == {"nodes": 1, "gpus_per_node": 4}


def test_same_gpus_as_another_shape() -> None:
    held = [hold("h0", N0, range(4)), hold("h1", N1, range(4))]
    want = job("j").region("cn-north").gpu_type("H100").gpus(8).submitted(5).build()
    found = suggest(snapshot(NODES, [want], held), CONFIG, 10.0, want)
    assert found[0].flag == "-N 2 --gpus-per-node 4"
    assert "the same 8 GPUs" in found[0].text


def test_another_gpu_type_only_in_its_region() -> None:
    held = [hold("h0", N0, range(8)), hold("h1", N1, range(8))]
    want = job("j").region("cn-north").gpu_type("H100").gpus(8).submitted(5).build()
    found = suggest(snapshot(NODES, [want], held), CONFIG, 10.0, want)
    assert [s.flag for s in found] == ["--gpu-type A100"]
    assert found[0].text == "fits now with `--gpu-type A100` (in cn-north)"
    # The A100 node of cn-north busy too: eu-west's A100 is free, but the data may not go there.
    busy = [*held, hold("h2", "cn-a", range(8))]
    assert suggest(snapshot(NODES, [want], busy), CONFIG, 10.0, want) == ()


def test_another_queue_only_if_the_team_may_use_it() -> None:
    queues = [
        queue("ml-a").quota(H100=8, A100=0).build(),
        queue("research").quota(H100=16, A100=8).build(),
        queue("other").quota(H100=16, A100=8).build(),
    ]
    held = [hold("h0", N0, range(8), "ml-a")]
    want = job("j").queue("ml-a").region("cn-north").gpu_type("H100").gpus(8).submitted(5).build()
    snap = snapshot(NODES, [want], held, queues=queues)
    assert decide(snap, CONFIG, 10.0).reason_for("j").code.value == "QuotaExceeded"
    found = suggest(snap, CONFIG, 10.0, want, queues={"ml-a", "research"})
    assert [s.flag for s in found] == ["--queue research"]
    assert found[0].text == "fits now in queue `research` (your token may use it): `--queue research`"
    assert suggest(snap, CONFIG, 10.0, want, queues={"ml-a"}) == ()


def test_shorter_time_limit_backfills() -> None:
    # A 2-node gang waits for both nodes (reserved from 4,200 s, when h1 reaches its limit); a
    # 4-GPU job without a time limit may not use the 4 free GPUs of a reserved node, one that
    # ends by then (1 h, rounded down from 4,190 s) may.
    held = [hold("h0", N0, range(8), t=0.0), hold("h1", N1, range(4), t=600.0)]
    gang = job("gang").region("cn-north").gpu_type("H100").gpus(8).nodes(2).submitted(0).build()
    small = job("small").region("cn-north").gpu_type("H100").gpus(4).submitted(5).build()
    snap = snapshot(CN, [gang, small], held)
    plan = decide(snap, CONFIG, 10.0)
    assert plan.reserves and places(plan, "small") is None
    found = suggest(snap, CONFIG, 10.0, small, plan=plan)
    assert [s.flag for s in found] == ["--time 1h"]
    assert found[0].change == {"time_limit_s": 3600.0}
    assert found[0].text.startswith("fits now with `--time 1h` (backfill")


def test_nothing_for_a_job_that_starts_anyway() -> None:
    want = job("j").gpus(1).build()
    assert suggest(snapshot(NODES, [want]), CONFIG, 10.0, want) == ()


def test_bounded_tries() -> None:
    held = [hold("h0", N0, range(8)), hold("h1", N1, range(4))]
    want = job("j").region("cn-north").gpu_type("H100").gpus(8).submitted(5).build()
    calls = 0

    def counting(*args: object) -> Plan:
        nonlocal calls
        calls += 1
        return decide(*args)  # type: ignore[arg-type]

    suggest(snapshot(NODES, [want], held), CONFIG, 10.0, want, max_tries=2, decide_fn=counting)
    assert calls <= 3  # the plan of the unchanged snapshot, then at most two trials


# --- property: over generated worlds ---------------------------------------------------------------

REGIONS = ("cn-north", "eu-west")
TYPES = ("H100", "A100")
QUEUES = ("qa", "qb", "qc")


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Node], list[Job], list[RunningJob], list[Queue], Job, set[str]]:
    nodes: list[Node] = []
    for i in range(draw(st.integers(2, 6))):
        nodes.append(
            node(
                f"n{i}",
                region=draw(st.sampled_from(REGIONS)),
                rack=f"k{draw(st.integers(0, 1))}",
                gpu_type=draw(st.sampled_from(TYPES)),
                gpus=draw(st.sampled_from((4, 8))),
            )
        )
    held: list[RunningJob] = []
    for i, n in enumerate(nodes):
        used = draw(st.integers(0, n.gpus))
        if used:
            q = draw(st.sampled_from(QUEUES))
            j = job(f"r{i}").queue(q).gpus(used).time_limit(draw(st.sampled_from((600.0, 3600.0)))).build()
            held.append(running(j, [(n.id, tuple(range(used)))], draw(st.sampled_from((0.0, 5.0))), on=nodes))
    queues = [
        queue(q).quota(**{t: draw(st.sampled_from((0, 8, 16, 64))) for t in TYPES}).cohort("c").build()
        for q in QUEUES
    ]
    pending: list[Job] = []
    for i in range(draw(st.integers(1, 4))):
        b = (
            job(f"p{i}")
            .queue(draw(st.sampled_from(QUEUES)))
            .gpus(draw(st.sampled_from((1, 2, 4, 8))))
            .nodes(draw(st.sampled_from((1, 1, 2, 3))))
            .region(draw(st.sampled_from((*REGIONS, ANY))))
            .gpu_type(draw(st.sampled_from((*TYPES, ANY))))
            .submitted(float(i))
        )
        if draw(st.booleans()):
            b = b.time_limit(draw(st.sampled_from((1800.0, 7200.0))))
        pending.append(b.build())
    target = draw(st.sampled_from(pending))
    allowed = {target.spec.queue, *draw(st.sets(st.sampled_from(QUEUES)))}
    return nodes, pending, held, queues, target, allowed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_every_suggestion_starts_the_job(
    world: tuple[list[Node], list[Job], list[RunningJob], list[Queue], Job, set[str]],
) -> None:
    nodes, pending, held, queues, target, allowed = world
    snap = snapshot(nodes, pending, held, queues=queues)
    plan = decide(snap, CONFIG, 10.0)
    assume(places(plan, target.id) is None)
    found = suggest(snap, CONFIG, 10.0, target, plan=plan, queues=allowed)
    region = {n.id: n.region for n in nodes}
    for s in found:
        assert s.kind in KINDS
        assert set(s.change) <= {"nodes", "gpus_per_node", "gpu_type", "queue", "time_limit_s"}
        assert s.change.get("queue", target.spec.queue) in allowed
        assert s.flag and s.flag in s.text
        place = applied(nodes, pending, held, queues, target, s)
        assert place is not None, s
        if target.spec.data_region != ANY:
            assert {region[n] for n in place.allocation.node_ids} == {target.spec.data_region}
