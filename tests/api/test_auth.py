"""Tokens and team isolation: a team sees and acts on its own jobs only; an admin on all."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.api.app import TOKEN_HELP
from scheduler.api.auth import TokenError, TokenTable
from scheduler.model.job import JobState
from tests.api.conftest import Api
from tests.api.harness import auth, finish

SPEC = {"name": "j", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]}


def submit(api: Api, who: str, queue: str) -> str:
    r = api.client.post("/v1/jobs", json={**SPEC, "queue": queue}, headers=auth(who))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "tok-a"}])
def test_missing_or_wrong_token_is_401_with_the_fix(api: Api, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/queues"),
        ("GET", "/v1/whoami"),
    ]:
        r = api.client.request(method, path, headers=headers, json=SPEC if method == "POST" else None)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"] == TOKEN_HELP
    assert api.count() == 0


def test_health_and_openapi_need_no_token(api: Api) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    schema = api.client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/logs", "/v1/queues"} <= set(schema["paths"])
    assert api.client.get("/docs").status_code == 200


def test_whoami(api: Api) -> None:
    assert api.client.get("/v1/whoami", headers=auth("b")).json() == {"team": "ml-b", "admin": False}
    assert api.client.get("/v1/whoami", headers=auth("admin")).json() == {"team": "ops", "admin": True}


def test_a_team_never_sees_or_touches_another_teams_job(api: Api) -> None:
    a_job = submit(api, "a", "ml-a")
    b_job = submit(api, "b", "ml-b")
    (api.log_dir / f"{a_job}.log").write_text("secret\n")
    c = api.client
    assert [j["id"] for j in c.get("/v1/jobs", headers=auth("b")).json()] == [b_job]
    for method, path in [
        ("GET", f"/v1/jobs/{a_job}"),
        ("POST", f"/v1/jobs/{a_job}/cancel"),
        ("GET", f"/v1/jobs/{a_job}/events"),
        ("GET", f"/v1/jobs/{a_job}/logs"),
    ]:
        r = c.request(method, path, headers=auth("b"))
        assert r.status_code == 404, (method, path)
        assert r.json()["error"].startswith(f"job {a_job} not found")
        assert "secret" not in r.text
    assert c.get("/v1/audit", params={"job_id": a_job}, headers=auth("b")).status_code == 404
    assert api.store.get(a_job).cancel_requested_at is None  # type: ignore[union-attr]
    # the same 404 as for a job that does not exist at all
    assert c.get("/v1/jobs/999999", headers=auth("b")).json()["error"].startswith("job 999999 not found")
    assert c.get("/v1/jobs/abc", headers=auth("b")).status_code == 404


def test_admin_sees_and_acts_on_all(api: Api) -> None:
    a_job = submit(api, "a", "ml-a")
    b_job = submit(api, "b", "ml-b")
    c = api.client
    assert {j["id"] for j in c.get("/v1/jobs", headers=auth("admin")).json()} == {a_job, b_job}
    only_b = c.get("/v1/jobs", params={"team": "ml-b"}, headers=auth("admin")).json()
    assert [j["id"] for j in only_b] == [b_job]
    assert c.get(f"/v1/jobs/{a_job}", headers=auth("admin")).status_code == 200
    assert c.post(f"/v1/jobs/{b_job}/cancel", headers=auth("admin")).status_code == 202
    assert c.get("/v1/jobs", params={"team": "ml-b"}, headers=auth("a")).status_code == 403


def test_history_and_audit_are_per_team(api: Api) -> None:
    a_job = submit(api, "a", "ml-a")
    b_job = submit(api, "b", "ml-b")
    finish(api.store, a_job, JobState.CANCELLED)
    finish(api.store, b_job, JobState.FAILED, 3)
    mine = api.client.get("/v1/history", headers=auth("a")).json()
    assert [j["id"] for j in mine] == [a_job] and mine[0]["history"][0]["kind"] == "SUBMITTED"
    both = api.client.get("/v1/history", headers=auth("admin")).json()
    assert [j["id"] for j in both] == [b_job, a_job]  # newest first


def test_token_table_loads_and_refuses_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "t.yaml"
    good.write_text("tokens:\n  - {token: x1, team: t}\n  - {token: x2, team: ops, admin: true}\n")
    table = TokenTable.load(good)
    assert table.lookup("x1") is not None and not table.lookup("x1").admin  # type: ignore[union-attr]
    assert table.lookup("x2").admin and table.lookup("x3") is None and table.lookup(None) is None  # type: ignore[union-attr]
    for text in ["tokens: 3\n", "tokens:\n  - {token: '', team: t}\n", "tokens:\n  - {token: a}\n", "[:\n"]:
        good.write_text(text)
        with pytest.raises(TokenError):
            TokenTable.load(good)
    with pytest.raises(TokenError):
        TokenTable.load(tmp_path / "missing.yaml")


def test_a_token_limited_to_some_queues_cannot_submit_elsewhere(api: Api) -> None:
    before = len(api.store.jobs())
    r = api.client.post("/v1/jobs", json={**SPEC, "queue": "ml-a"}, headers=auth("vision"))
    assert r.status_code == 403 and r.json()["field"] == "queue" and "ml-b" in r.json()["error"]
    assert len(api.store.jobs()) == before  # nothing written
    assert submit(api, "vision", "ml-b")
    assert submit(api, "admin", "ml-a")  # admins may use every queue


def test_queues_of_a_token_must_be_a_list_of_names(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("tokens:\n  - {token: x, team: t, queues: vision}\n")
    with pytest.raises(TokenError, match=r"tokens\[0\]\.queues"):
        TokenTable.load(bad)


def test_metrics_are_served_without_a_token(api: Api) -> None:
    r = api.client.get("/metrics", follow_redirects=False)
    assert r.status_code == 200 and "process_cpu_seconds_total" in r.text
