"""GET /v1/state: the controller's last scheduling state for what-if, admins only, read back whole."""

from __future__ import annotations

from scheduler.forecast.wire import decode_state
from scheduler.model.job import JobState
from tests.api.conftest import Api
from tests.api.test_jobs import EU_WIDE


def test_an_admin_reads_the_state_the_last_cycle_decided_over(api: Api) -> None:
    blocker = api.submit(**EU_WIDE, time_limit_s=3600)
    api.start(blocker)
    done = api.submit(gpus_per_node=1)
    api.start(done)
    api.finish(done)
    waiting = api.submit(data_region="eu-west")
    api.wait_for(waiting, [JobState.PENDING])
    denied = api.client.get("/v1/state", headers=api.auth("a"))
    assert denied.status_code == 403 and "only an admin" in denied.json()["error"]
    body = api.client.get("/v1/state", headers=api.auth("admin"))
    assert body.status_code == 200, body.text
    live = decode_state(body.json())
    inputs = api.controller.replay_inputs()
    assert live.cluster == inputs.cluster and live.policy == inputs.policy
    assert [j.id for j in live.state.pending] == [waiting]
    assert {r.id for r in live.state.running} == {blocker}
    assert {r.id: r.allocation for r in live.state.running} == {
        r.id: r.allocation for r in inputs.state.running
    }
    assert [n.id for n in live.state.nodes] == [n.id for n in inputs.state.nodes]
    assert [q for q, _ in live.finished] == ["ml-a"]
    assert {j.id for j in live.recent} == {blocker, done, waiting}
    old = api.client.get("/v1/state", params={"recent_s": 0}, headers=api.auth("admin")).json()
    assert old["recent"] == []
