"""The controller's suggestion worker: bounded, off the cycle, and only queues a team may use."""

from __future__ import annotations

from scheduler.api.auth import Principal
from scheduler.api.schemas import visible_suggestions
from scheduler.control.suggestions import SuggestionWorker, team_queues
from scheduler.model.job import Job
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.suggest import Suggestion
from scheduler.store.token_store import TokenLimits, TokenRecord
from tests.builders import cluster, job, queue, running, snapshot

NODES = cluster(racks=1, nodes_per_rack=2)  # r-k0-n0, r-k0-n1: 2 × 8 H100
N0, N1 = NODES[0].id, NODES[1].id
CONFIG = PolicyConfig()


def _world(waiting: list[Job]):  # type: ignore[no-untyped-def]
    queues = [queue("qa").quota(H100=8).build(), queue("qb").quota(H100=8).build()]
    held = [running(job("h").queue("qa").gpus(8).build(), [N0], 0.0, on=NODES)]
    snap = snapshot(NODES, waiting, held, queues=queues)
    return snap, decide(snap, CONFIG, 10.0)


def test_it_computes_for_the_first_jobs_of_each_queue_once_per_snapshot() -> None:
    waiting = [job(f"w{i}").queue("qa").gpus(8).submitted(float(i)).build() for i in range(5)]
    snap, plan = _world(waiting)
    worker = SuggestionWorker(CONFIG, per_queue=2)
    worker.offer(snap, plan, 10.0, version=1)
    worker.refresh()
    assert sorted(j for j in ("w0", "w1", "w2", "w3", "w4") if worker.get(j)) == ["w0", "w1"]
    assert [s.flag for s in worker.get("w0")] == ["--queue qb"]  # no team limits: any queue
    worker.refresh()  # the same snapshot: nothing to do again
    assert worker.refreshes == 1
    worker.offer(snap, plan, 10.0, version=2)
    worker.refresh()
    assert worker.refreshes == 2


def test_queues_are_tried_only_where_the_team_may_submit() -> None:
    waiting = [job("w0").queue("qa").gpus(8).build()]
    waiting = [waiting[0].model_copy(update={"team": "t"})]
    snap, plan = _world(waiting)
    worker = SuggestionWorker(CONFIG, team_queues=lambda: {"t": frozenset({"qa"})})
    worker.offer(snap, plan, 10.0, version=1)
    worker.refresh()
    assert worker.get("w0") == ()


def test_a_budget_bounds_a_refresh() -> None:
    waiting = [job(f"w{i}").queue("qa").gpus(8).submitted(float(i)).build() for i in range(3)]
    snap, plan = _world(waiting)
    worker = SuggestionWorker(CONFIG, per_queue=3, budget_s=0.0)
    worker.offer(snap, plan, 10.0, version=1)
    worker.refresh()
    assert all(worker.get(f"w{i}") == () for i in range(3))


def _token(
    team: str, queues: tuple[str, ...] | None, admin: bool = False, revoked: bool = False
) -> TokenRecord:
    return TokenRecord(
        id=team,
        prefix="p",
        description="",
        team=team,
        admin=admin,
        limits=TokenLimits(queues=queues),
        created_at=0.0,
        created_by="test",
        revoked_at=1.0 if revoked else None,
    )


def test_team_queues_is_the_union_of_its_active_tokens() -> None:
    tokens = [
        _token("a", ("qa",)),
        _token("a", ("qb",)),
        _token("a", None, revoked=True),
        _token("b", ("qa",)),
        _token("b", None),
    ]
    assert team_queues(tokens) == {"a": frozenset({"qa", "qb"}), "b": None}


def test_the_api_shows_a_queue_only_to_a_token_that_may_submit_there() -> None:
    found = [
        Suggestion("queue", {"queue": "qb"}, "--queue qb", "fits now in queue `qb` ..."),
        Suggestion("shape", {"nodes": 1, "gpus_per_node": 4}, "--gpus 4", "fits now with `--gpus 4` ..."),
    ]
    limited = Principal(team="a", admin=False, token_id="1", queues=frozenset({"qa"}))
    anywhere = Principal(team="a", admin=False, token_id="2", queues=None)
    admin = Principal(team="admin", admin=True, token_id="3", queues=frozenset())
    assert [s.flag for s in visible_suggestions(found, limited)] == ["--gpus 4"]
    assert [s.flag for s in visible_suggestions(found, anywhere)] == ["--queue qb", "--gpus 4"]
    assert [s.flag for s in visible_suggestions(found, admin)] == ["--queue qb", "--gpus 4"]
