"""Listing, getting and cancelling jobs; queues and nodes from the controller's view."""

from __future__ import annotations

from scheduler.model.job import JobState
from tests.api.conftest import Api
from tests.api.harness import auth, finish, start

SPEC = {"name": "j", "queue": "ml-a", "gpus_per_node": 2, "command": ["true"]}


def submit(api: Api, **changes: object) -> str:
    r = api.client.post("/v1/jobs", json={**SPEC, **changes}, headers=auth("a"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_list_defaults_to_unfinished_jobs_and_filters(api: Api) -> None:
    done, running, pending = submit(api), submit(api), submit(api, queue="default")
    start(api.store, running, {"cn-north-r1-n00": (0, 1)})
    finish(api.store, done)
    c = api.client
    assert [j["id"] for j in c.get("/v1/jobs", headers=auth("a")).json()] == [running, pending]
    assert len(c.get("/v1/jobs", params={"all": "true"}, headers=auth("a")).json()) == 3
    by_state = c.get("/v1/jobs", params=[("state", "running"), ("state", "SUCCEEDED")], headers=auth("a"))
    assert {j["id"] for j in by_state.json()} == {running, done}
    by_queue = c.get("/v1/jobs", params={"queue": "default"}, headers=auth("a")).json()
    assert [j["id"] for j in by_queue] == [pending]
    bad = c.get("/v1/jobs", params={"state": "sleeping"}, headers=auth("a"))
    assert bad.status_code == 422 and bad.json()["field"] == "state"
    bad = c.get("/v1/jobs", params={"limit": 0}, headers=auth("a"))
    assert bad.status_code == 422 and bad.json()["error"].startswith("query.limit: must be ≥ 1")


def test_job_json_has_state_allocation_position_history_and_audit(api: Api) -> None:
    pending, running = submit(api), submit(api)
    start(api.store, running, {"cn-north-r1-n00": (2, 3)})
    c = api.client
    p = c.get(f"/v1/jobs/{pending}", headers=auth("a")).json()
    assert p["state"] == "PENDING" and p["queue_position"] == 1 and p["pending_reason"]
    assert p["allocation"] is None and p["run_time_s"] is None
    assert [e["kind"] for e in p["history"]] == ["SUBMITTED"] and p["audit"] == []
    r = c.get(f"/v1/jobs/{running}", headers=auth("a")).json()
    assert r["state"] == "RUNNING" and r["allocation"] == [{"node": "cn-north-r1-n00", "gpus": [2, 3]}]
    assert r["run_time_s"] >= 0 and r["queue_position"] is None
    listed = c.get("/v1/jobs", headers=auth("a")).json()
    assert set(listed[0]) | {"history", "audit"} == set(p)


def test_cancel_records_a_request_and_wakes_the_controller(api: Api) -> None:
    job = submit(api)
    r = api.client.post(f"/v1/jobs/{job}/cancel", json={"grace_s": 5}, headers=auth("a"))
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    record = api.store.get(job)
    assert record is not None and record.cancel_grace_s == 5
    assert api.controller.wakes == 2
    events = api.client.get(f"/v1/jobs/{job}/events", headers=auth("a")).json()
    assert [e["kind"] for e in events] == ["SUBMITTED", "CANCEL_REQUESTED"]
    finish(api.store, job, JobState.CANCELLED)
    again = api.client.post(f"/v1/jobs/{job}/cancel", headers=auth("a"))
    assert again.status_code == 409 and "already finished" in again.json()["error"]
    bad = api.client.post(f"/v1/jobs/{job}/cancel", json={"grace_s": -1}, headers=auth("a"))
    assert bad.status_code == 422 and bad.json()["field"] == "grace_s"


def test_queues_and_nodes_show_use_but_only_own_job_ids(api: Api) -> None:
    mine = submit(api)
    start(api.store, mine, {"cn-north-r1-n00": (0, 1)})
    r = api.client.post("/v1/jobs", json={**SPEC, "queue": "ml-b"}, headers=auth("b"))
    theirs = r.json()["id"]
    start(api.store, theirs, {"cn-north-r1-n00": (2, 3)})
    queues = {q["name"]: q for q in api.client.get("/v1/queues", headers=auth("a")).json()}
    assert queues["ml-a"]["used"] == {"H100": 2} and queues["ml-a"]["quota"] == {"H100": 16, "A100": 8}
    assert queues["ml-a"]["running"] == 1 and queues["default"]["pending"] == 0
    nodes = {n["id"]: n for n in api.client.get("/v1/nodes", headers=auth("a")).json()}
    n0 = nodes["cn-north-r1-n00"]
    assert (n0["gpus"], n0["used"], n0["free"], n0["state"]) == (8, 4, 4, "ready")
    assert n0["jobs"] == [mine] and n0["region"] == "cn-north" and n0["gpu_type"] == "H100"
    admin = {n["id"]: n for n in api.client.get("/v1/nodes", headers=auth("admin")).json()}
    assert set(admin["cn-north-r1-n00"]["jobs"]) == {mine, theirs}


def test_unexpected_errors_are_500_without_a_traceback(api: Api) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals")

    api.controller.view = boom  # type: ignore[assignment,method-assign]
    r = api.client.get("/v1/queues", headers=auth("a"))
    assert r.status_code == 500
    assert r.json() == {"error": "internal error: see the controller log", "field": None}
