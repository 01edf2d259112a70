"""Listing, getting and cancelling jobs; queues and nodes from the controller's view; pages."""

from __future__ import annotations

import threading

from scheduler.model.job import JobState
from tests.api.conftest import Api
from tests.api.harness import until

EU_WIDE = {"nodes": 2, "gpus_per_node": 8, "gpu_type": "H100", "data_region": "eu-west"}


def fill_eu_west(api: Api) -> str:
    """A running job holding every GPU of eu-west: jobs for eu-west then wait."""
    job = api.submit(**EU_WIDE)
    api.start(job)
    return job


def test_list_defaults_to_unfinished_jobs_and_filters(api: Api) -> None:
    blocker = fill_eu_west(api)
    done, running = api.submit(gpus_per_node=2), api.submit(gpus_per_node=2)
    pending = api.submit(queue="default", data_region="eu-west")
    api.start(running)
    api.finish(done)
    api.wait_for(pending, [JobState.PENDING])
    c, a = api.client, api.auth("a")
    assert [j["id"] for j in c.get("/v1/jobs", headers=a).json()] == [blocker, running, pending]
    assert len(c.get("/v1/jobs", params={"all": "true"}, headers=a).json()) == 4
    by_state = c.get("/v1/jobs", params=[("state", "running"), ("state", "SUCCEEDED")], headers=a)
    assert {j["id"] for j in by_state.json()} == {blocker, running, done}
    by_queue = c.get("/v1/jobs", params={"queue": "default"}, headers=a).json()
    assert [j["id"] for j in by_queue] == [pending]
    bad = c.get("/v1/jobs", params={"state": "sleeping"}, headers=a)
    assert bad.status_code == 422 and bad.json()["field"] == "state"
    for limit, message in [(0, "query.limit: must be ≥ 1"), (1001, "query.limit: must be ≤ 1000")]:
        bad = c.get("/v1/jobs", params={"limit": limit}, headers=a)
        assert bad.status_code == 422 and bad.json()["error"].startswith(message)


def test_job_json_has_state_allocation_position_history_and_audit(api: Api) -> None:
    fill_eu_west(api)
    pending, running = api.submit(data_region="eu-west"), api.submit(gpus_per_node=2)
    record = api.start(running)
    api.wait_for(pending, [JobState.PENDING])
    c = api.client
    p = c.get(f"/v1/jobs/{pending}", headers=api.auth("a")).json()
    assert p["state"] == "PENDING" and p["queue_position"] == 1 and p["pending_reason"]
    assert p["allocation"] is None and p["run_time_s"] is None
    assert [e["kind"] for e in p["history"]] == ["SUBMITTED"] and p["audit"] == []
    r = c.get(f"/v1/jobs/{running}", headers=api.auth("a")).json()
    assert record.allocation is not None
    assert r["state"] == "RUNNING" and r["allocation"] == [
        {"node": n.node, "gpus": list(n.gpus)} for n in record.allocation.nodes
    ]
    assert len(r["allocation"][0]["gpus"]) == 2 and r["allocation"][0]["node"].startswith("cn-north")
    assert r["run_time_s"] >= 0 and r["queue_position"] is None
    assert [e["kind"] for e in r["history"]] == ["SUBMITTED", "PLACED", "STARTED"]
    (placed,) = r["audit"]
    assert placed["decision"] == "place" and placed["residency_ok"] is True
    listed = c.get("/v1/jobs", headers=api.auth("a")).json()
    assert set(listed[0]) | {"history", "audit"} == set(p)


def test_cancel_records_a_request_and_the_controller_carries_it_out(api: Api) -> None:
    job = api.submit(gpus_per_node=2)
    api.start(job)
    r = api.client.post(f"/v1/jobs/{job}/cancel", json={"grace_s": 5}, headers=api.auth("a"))
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    record = api.store.get(job)
    assert record is not None and record.cancel_grace_s == 5
    # the controller asks the backend to stop it with that grace; the job ends when it exits
    until(lambda: bool(api.backend.stops_of(job)), "the stop")
    assert api.backend.stops_of(job)[0][2] == 5
    api.exit(job, 143)
    api.wait_for(job, [JobState.CANCELLED])
    events = api.client.get(f"/v1/jobs/{job}/events", headers=api.auth("a")).json()
    assert [e["kind"] for e in events][:4] == ["SUBMITTED", "PLACED", "STARTED", "CANCEL_REQUESTED"]
    assert events[-1]["kind"] == "CANCELLED"
    again = api.client.post(f"/v1/jobs/{job}/cancel", headers=api.auth("a"))
    assert again.status_code == 409 and "already finished" in again.json()["error"]
    bad = api.client.post(f"/v1/jobs/{job}/cancel", json={"grace_s": -1}, headers=api.auth("a"))
    assert bad.status_code == 422 and bad.json()["field"] == "grace_s"
    assert bad.json()["error"].startswith("cancel.grace_s: must be ≥ 0")


def test_a_bad_cancel_body_names_the_cancel_field(api: Api) -> None:
    job = api.submit()
    api.wait_for(job, [JobState.STARTING])  # placed: nothing else changes the counts below
    before = api.counts()
    for body, fragment in [
        ({"grace": 5}, "cancel.grace: unknown field (allowed: grace_s)"),
        ({"grace_s": "soon"}, "cancel.grace_s: must be a number"),
        ({"grace_s": True}, "cancel.grace_s: must be a number"),
        ([5], "cancel: must be a mapping"),
    ]:
        r = api.client.post(f"/v1/jobs/{job}/cancel", json=body, headers=api.auth("a"))
        assert r.status_code == 422, r.text
        assert r.json()["error"].startswith(fragment), r.json()
        assert "spec" not in r.json()["error"] and "gpus_per_node" not in r.json()["error"]
    r = api.client.post(
        f"/v1/jobs/{job}/cancel", content=b"grace=5", headers={**api.auth("a"), "Content-Type": "text/plain"}
    )
    assert r.status_code == 415 and r.json()["field"] == "body"
    assert api.counts() == before and api.store.get(job).cancel_requested_at is None  # type: ignore[union-attr]


def test_queues_and_nodes_show_use_but_only_own_job_ids(api: Api) -> None:
    mine = api.submit(gpus_per_node=2, gpu_type="H100")
    theirs = api.submit("b", queue="ml-b", gpus_per_node=2, gpu_type="H100")
    records = [api.start(mine), api.start(theirs)]
    queues = {q["name"]: q for q in api.client.get("/v1/queues", headers=api.auth("a")).json()}
    assert queues["ml-a"]["used"] == {"H100": 2} and queues["ml-a"]["quota"] == {"H100": 16, "A100": 8}
    assert queues["ml-a"]["running"] == 1 and queues["default"]["pending"] == 0
    nodes = {n["id"]: n for n in api.client.get("/v1/nodes", headers=api.auth("a")).json()}
    assert sum(n["used"] for n in nodes.values()) == 4
    assert sum(n["gpus"] for n in nodes.values()) == 40 and all(n["state"] == "ready" for n in nodes.values())
    mine_on = records[0].allocation.nodes[0].node  # type: ignore[union-attr]
    assert mine in nodes[mine_on]["jobs"]
    assert all(theirs not in n["jobs"] for n in nodes.values())  # another team's ids never show
    admin = {n["id"]: n for n in api.client.get("/v1/nodes", headers=api.auth("admin")).json()}
    assert {j for n in admin.values() for j in n["jobs"]} == {mine, theirs}


def test_pages_follow_the_cursor_without_gaps_or_repeats(api: Api) -> None:
    ids = [api.submit(name=f"j{i}", data_region="cn-north") for i in range(7)]
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params = {"limit": 3, "all": "true", **({"after": after} if after else {})}
        r = api.client.get("/v1/jobs", params=params, headers=api.auth("a"))
        assert r.status_code == 200, r.text
        seen += [j["id"] for j in r.json()]
        pages += 1
        after = r.headers.get("X-Next-Cursor")
        if after is None:
            break
    assert seen == ids and pages == 3
    # the last full page says there is no more when nothing follows
    last = api.client.get("/v1/jobs", params={"all": "true", "limit": 7}, headers=api.auth("a"))
    assert "X-Next-Cursor" not in last.headers and len(last.json()) == 7
    # events page by seq
    job = ids[0]
    api.finish(job)
    first = api.client.get(f"/v1/jobs/{job}/events", params={"limit": 2}, headers=api.auth("a"))
    assert [e["kind"] for e in first.json()] == ["SUBMITTED", "PLACED"]
    rest = api.client.get(
        f"/v1/jobs/{job}/events",
        params={"after_seq": first.headers["X-Next-Cursor"]},
        headers=api.auth("a"),
    )
    assert [e["kind"] for e in rest.json()] == [
        "STARTED",
        "SUCCEEDED",
    ] and "X-Next-Cursor" not in rest.headers


def test_history_is_two_queries_and_audit_pages_are_full_for_a_team(api: Api) -> None:
    # another team's audit entries come first: a team's page must still be full (filtered in SQL)
    for _ in range(4):
        api.finish(api.submit("b", queue="ml-b"))
    mine = [api.submit() for _ in range(3)]
    for job in mine:
        api.finish(job)
    page = api.client.get("/v1/audit", params={"limit": 2}, headers=api.auth("a"))
    assert [a["job_id"] for a in page.json()] == mine[:2] and page.headers["X-Next-Cursor"]
    rest = api.client.get(
        "/v1/audit", params={"limit": 2, "after_seq": page.headers["X-Next-Cursor"]}, headers=api.auth("a")
    )
    assert [a["job_id"] for a in rest.json()] == mine[2:] and "X-Next-Cursor" not in rest.headers

    from sqlalchemy import event

    statements: list[str] = []
    background = ("corral-controller", "corral-submit-writer")

    def listener(*args: object) -> None:  # before_cursor_execute(conn, cursor, statement, ...)
        if threading.current_thread().name not in background:
            statements.append(str(args[2]))

    event.listen(api.store.engine, "before_cursor_execute", listener)
    try:
        history = api.client.get("/v1/history", params={"limit": 5}, headers=api.auth("admin"))
    finally:
        event.remove(api.store.engine, "before_cursor_execute", listener)
    assert len(history.json()) == 5 and history.headers["X-Next-Cursor"]
    assert all(h["history"][-1]["kind"] == "SUCCEEDED" for h in history.json())
    reads = [q for q in statements if "FROM jobs" in q or "FROM events" in q]  # (a token lookup aside)
    assert len(reads) == 2, reads  # the jobs, then all their events (and no query per job)


def test_unexpected_errors_are_500_without_a_traceback(api: Api) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals")

    api.controller.view = boom  # type: ignore[assignment,method-assign]
    r = api.client.get("/v1/queues", headers=api.auth("a"))
    assert r.status_code == 500
    assert r.json() == {"error": "internal error: see the controller log", "field": None}
