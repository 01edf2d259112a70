"""Cordon and uncordon (admins), through the API on the real controller: a cordoned node takes no
new job, keeps its running ones, and says why in `GET /v1/nodes`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.model.job import JobState
from scheduler.store import controller_state
from scheduler.view import empty_view
from tests.api.conftest import Api

NODE = "cn-north-r1-n00"


def _node(api: Api, node: str = NODE, who: str = "admin") -> dict[str, object]:
    nodes = api.client.get("/v1/nodes", headers=api.auth(who)).json()
    return next(n for n in nodes if n["id"] == node)


def test_an_admin_cordons_and_uncordons_a_node(api: Api) -> None:
    r = api.client.post(f"/v1/nodes/{NODE}/cordon", json={"reason": "bad fan"}, headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "draining" and r.json()["cordon_reason"] == "bad fan"
    assert _node(api, who="a")["cordon_reason"] == "bad fan"  # teams see it too
    r = api.client.post(f"/v1/nodes/{NODE}/uncordon", headers=api.auth("admin"))
    assert r.status_code == 200 and r.json()["state"] == "ready" and r.json()["cordon_reason"] == ""
    again = api.client.post(f"/v1/nodes/{NODE}/uncordon", headers=api.auth("admin"))
    assert again.status_code == 409 and "is not cordoned" in again.json()["error"]


def test_a_cordoned_node_takes_no_new_job_but_keeps_its_running_one(api: Api) -> None:
    running = api.submit(gpus_per_node=8, gpu_type="H100", data_region="cn-north")
    rec = api.start(running)
    assert rec.allocation is not None
    held = rec.allocation.node_ids[0]
    r = api.client.post(f"/v1/nodes/{held}/cordon", headers=api.auth("admin"))
    assert r.status_code == 200 and r.json()["state"] == "draining"
    assert api.store.get(running).state is JobState.RUNNING  # type: ignore[union-attr]
    api.finish(running)
    # the region has one other 8-GPU H100 node: a job fits there, a second one must wait
    first = api.submit(gpus_per_node=8, gpu_type="H100", data_region="cn-north")
    second = api.submit(gpus_per_node=8, gpu_type="H100", data_region="cn-north")
    placed = api.wait_for(first, {JobState.STARTING, JobState.RUNNING})
    assert placed.allocation is not None and placed.allocation.node_ids[0] != held
    assert api.store.get(second).state is JobState.PENDING  # type: ignore[union-attr]


def test_only_admins_cordon_and_only_known_nodes(api: Api) -> None:
    r = api.client.post(f"/v1/nodes/{NODE}/cordon", headers=api.auth("a"))
    assert r.status_code == 403 and "only an admin" in r.json()["error"]
    r = api.client.post("/v1/nodes/no-such-node/cordon", headers=api.auth("admin"))
    assert r.status_code == 404 and r.json()["field"] == "node"
    assert _node(api)["state"] == "ready"


def test_liveness_and_readiness(api: Api) -> None:
    assert api.client.get("/livez").json() == {"status": "ok"}
    ready = api.client.get("/healthz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


def test_readiness_fails_when_the_controller_stops(api: Api) -> None:
    api.controller.stop()
    ready = api.client.get("/healthz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["status"] == "degraded" and ready.json()["checks"]["controller"] == "stopped"
    assert api.client.get("/livez").status_code == 200


def test_an_uncordon_that_was_written_is_not_answered_503_when_the_view_empties_meanwhile(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller that just restarted (or whose Ray listed no node for a cycle) may lose its view
    right after the store took the change: the answer must still be 200, or a client that retries
    on 503 is told 409 "not cordoned" about its own, successful, request (the e2e test saw this)."""
    r = api.client.post(f"/v1/nodes/{NODE}/cordon", json={"reason": "bad fan"}, headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    real_view = api.controller.view
    empty = replace(real_view(), nodes=())
    lost = [False]

    def lose_the_view() -> None:  # called right after the store took the change
        lost[0] = True

    monkeypatch.setattr(api.controller, "cordons_changed", lose_the_view)
    monkeypatch.setattr(api.controller, "view", lambda: empty if lost[0] else real_view())
    r = api.client.post(f"/v1/nodes/{NODE}/uncordon", headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == NODE and r.json()["state"] == "ready" and r.json()["cordon_reason"] == ""
    assert NODE not in controller_state.cordons(api.store)
    lost[0] = False
    r = api.client.post(f"/v1/nodes/{NODE}/cordon", json={"reason": "fan again"}, headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "draining" and r.json()["cordon_reason"] == "fan again"
    r = api.client.post(f"/v1/nodes/{NODE}/cordon", json={"reason": "fan, third"}, headers=api.auth("admin"))
    assert r.status_code == 503  # checked before anything is written: nothing to retry around
    assert controller_state.cordons(api.store)[NODE].reason == "fan again"


@pytest.mark.parametrize("path", ["/v1/queues", "/v1/nodes"])
def test_a_controller_that_has_not_drawn_the_cluster_yet_answers_503_not_an_empty_list(
    api: Api, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Right after a restart or a takeover, before its first cycle, a controller has no queues or
    nodes to show: an empty list would tell `corral queues` there are none (the e2e suite saw
    `queues -o json` print [] after a restart). 503 with Retry-After makes the client wait."""
    monkeypatch.setattr(api.controller, "view", lambda: empty_view(()))
    r = api.client.get(path, headers=api.auth("admin"))
    assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
    assert "has not drawn the cluster yet" in r.json()["error"]
    monkeypatch.undo()
    r = api.client.get(path, headers=api.auth("admin"))
    assert r.status_code == 200 and r.json(), r.text
