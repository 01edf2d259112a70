"""Job arrays through the API and the real controller: one transaction, idempotent, the %N cap
enforced by the scheduler, cancel of the whole array, each task preempted on its own."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.model.array import MAX_ARRAY_SIZE
from scheduler.model.job import JobState
from tests.api.conftest import Api
from tests.api.harness import HOLDING, until

GOOD: dict[str, Any] = {"name": "sweep", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]}


def post(api: Api, body: dict[str, Any], who: str = "a", key: str | None = None) -> Any:
    headers = {**api.auth(who), **({"Idempotency-Key": key} if key else {})}
    return api.client.post("/v1/jobs", json=body, headers=headers)


def test_one_pending_job_per_index(api: Api) -> None:
    r = post(api, {**GOOD, "array": "1,3,5-9:2"})
    assert r.status_code == 201, r.text
    body = r.json()
    head = body["tasks"][0]["id"]
    assert (body["array_id"], body["array"], body["max_running"]) == (head, "1,3,5-9:2", None)
    assert [(t["array_id"], t["array_index"]) for t in body["tasks"]] == [(head, i) for i in (1, 3, 5, 7, 9)]
    assert all(t["team"] == "ml-a" and t["spec"]["array"] == "1,3,5-9:2" for t in body["tasks"])
    got = api.client.get(f"/v1/arrays/{head}", headers=api.auth("a")).json()
    assert [t["id"] for t in got["tasks"]] == [t["id"] for t in body["tasks"]]
    listed = api.client.get("/v1/jobs", params={"array": head, "all": "true"}, headers=api.auth("a")).json()
    assert [t["array_index"] for t in listed] == [1, 3, 5, 7, 9]
    one = api.client.get(f"/v1/jobs/{body['tasks'][2]['id']}", headers=api.auth("a")).json()
    assert (one["array_id"], one["array_index"]) == (head, 5)
    # another team sees no such array
    assert api.client.get(f"/v1/arrays/{head}", headers=api.auth("b")).status_code == 404
    # a plain job is no array
    plain = api.submit()
    assert api.client.get(f"/v1/arrays/{plain}", headers=api.auth("a")).status_code == 404


def test_idempotency_key_returns_the_same_array(api: Api) -> None:
    first = post(api, {**GOOD, "array": "0-3"}, key="sweep-1")
    again = post(api, {**GOOD, "array": "0-3"}, key="sweep-1")
    assert (first.status_code, again.status_code) == (201, 200)
    ids = [(t["id"], t["array_index"]) for t in first.json()["tasks"]]
    assert [(t["id"], t["array_index"]) for t in again.json()["tasks"]] == ids
    assert again.json()["array_id"] == first.json()["array_id"]
    other = post(api, {**GOOD, "array": "0-4"}, key="sweep-1")
    assert other.status_code == 409 and other.json()["field"] == "idempotency_key"
    assert api.count() == 4


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        ("5-2", "spec.array: 5-2: the range ends before it starts — write 2-5"),
        ("0-15%0", "at least 1 task must be allowed to run"),
        (f"0-{MAX_ARRAY_SIZE}", f"index {MAX_ARRAY_SIZE} is above the largest, {MAX_ARRAY_SIZE - 1}"),
        ("0-3:0", "the step after ':' must be at least 1"),
        ("x", "is not an index or a range"),
    ],
)
def test_bad_array_is_one_line_422_and_creates_nothing(api: Api, array: str, fragment: str) -> None:
    before = api.counts()
    r = post(api, {**GOOD, "array": array})
    assert r.status_code == 422, r.text
    error = r.json()
    assert error["field"] == "array" and fragment in error["error"] and "\n" not in error["error"]
    assert api.counts() == before


def test_a_spec_that_cannot_run_creates_no_task(api: Api) -> None:
    before = api.counts()
    r = post(api, {**GOOD, "array": "0-99", "queue": "nope"})
    assert r.status_code == 400 and r.json()["field"] == "queue"
    r = post(api, {**GOOD, "array": "0-99", "gpus_per_node": 16}, who="limited")
    assert r.status_code == 403
    assert api.counts() == before


def test_the_cap_holds_live_and_the_next_task_starts_when_one_ends(api: Api) -> None:
    tasks = post(api, {**GOOD, "array": "0-5%2"}).json()["tasks"]
    ids = [t["id"] for t in tasks]
    for job_id in ids[:2]:
        api.start(job_id)
    until(lambda: all(_reason(api, j).startswith("JobArrayTaskLimit") for j in ids[2:]), "the cap's reason")
    assert _reason(api, ids[2]) == (
        f"JobArrayTaskLimit: array {ids[0]} already runs 2 of its tasks, its limit (%2)"
    )
    api.finish(ids[0])
    api.wait_for(ids[2], HOLDING)
    assert [api.store.get(j).state for j in ids[3:]] == [JobState.PENDING] * 3  # type: ignore[union-attr]
    holding = [j for j in ids if api.store.get(j).state in HOLDING]  # type: ignore[union-attr]
    assert len(holding) == 2


def _reason(api: Api, job_id: str) -> str:
    record = api.store.get(job_id)
    return "" if record is None else str(record.pending_reason or "")


def test_cancel_array_cancels_every_unfinished_task(api: Api) -> None:
    tasks = post(api, {**GOOD, "array": "0-3%2"}).json()["tasks"]
    ids = [t["id"] for t in tasks]
    api.finish(ids[0])
    api.start(ids[1])
    r = api.client.post(f"/v1/arrays/{ids[0]}/cancel", json={"grace_s": 0}, headers=api.auth("a"))
    assert r.status_code == 202, r.text
    assert [t["cancel_requested"] for t in r.json()["tasks"]] == [False, True, True, True]
    for job_id in ids[1:]:  # a task that holds GPUs is stopped (and exits), the others just end
        assert api.finish(job_id, JobState.CANCELLED).state is JobState.CANCELLED
    assert api.backend.stops_of(ids[1])
    assert api.store.get(ids[0]).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    again = api.client.post(f"/v1/arrays/{ids[0]}/cancel", headers=api.auth("a"))
    assert again.status_code == 409 and "nothing to cancel" in again.json()["error"]
    assert api.client.post(f"/v1/arrays/{ids[0]}/cancel", headers=api.auth("b")).status_code == 404


def test_each_task_is_preempted_on_its_own(api: Api) -> None:
    """Two 8-GPU tasks fill ml-a's cn-north H100s; a high-priority job takes one task's GPUs."""
    body = {**GOOD, "gpus_per_node": 8, "gpu_type": "H100", "data_region": "cn-north", "priority": "low"}
    tasks = post(api, {**body, "array": "0-1"}).json()["tasks"]
    ids = [t["id"] for t in tasks]
    for job_id in ids:
        api.start(job_id)
    urgent = api.submit(gpus_per_node=8, gpu_type="H100", data_region="cn-north", priority="high")
    until(lambda: any(api.backend.stops_of(j) for j in ids), "a task asked to stop")
    victims = [j for j in ids if api.backend.stops_of(j)]
    assert len(victims) == 1
    api.exit(victims[0], 143)
    requeued = api.wait_for(victims[0], [JobState.PENDING])
    assert (requeued.job.preemption_count, requeued.job.array_index) == (1, ids.index(victims[0]))
    api.wait_for(urgent, HOLDING)
    survivor = next(j for j in ids if j != victims[0])
    assert api.store.get(survivor).state is JobState.RUNNING  # type: ignore[union-attr]
