"""Tokens and team isolation: every route × every kind of caller, status AND content."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.api.app import TOKEN_HELP
from scheduler.model.job import JobState
from tests.api.conftest import Api
from tests.api.harness import until

SECRET_NAME, SECRET_CMD, SECRET_LOG = "secret-a-name", "secret-a-command", "secret-a-log-line"
FIRST_ID = 7_000_000_000  # job ids no timestamp or count could be mistaken for


def _big_ids(api: Api) -> None:
    with api.store.engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', :seq)"), {"seq": FIRST_ID}
        )


def _texts(value: Any) -> list[str]:
    """Every string inside a JSON value (keys too)."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (str(k), *_texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return [str(value)] if value is not None else []


def _mentions(body: str, job_id: str) -> bool:
    return re.search(rf"(?<!\d){job_id}(?!\d)", body) is not None


class World:
    """Team ml-a's job, preempted by team ml-b's high-priority job; more jobs to cancel."""

    def __init__(self, api: Api) -> None:
        _big_ids(api)
        eu = {"nodes": 2, "gpus_per_node": 8, "gpu_type": "H100", "data_region": "eu-west"}
        self.a_job = api.submit("a", name=SECRET_NAME, command=["echo", SECRET_CMD], priority="low", **eu)
        api.start(self.a_job)
        (api.log_dir / f"{self.a_job}.log").write_text(f"{SECRET_LOG}\n")
        self.b_job = api.submit("b", queue="ml-b", priority="high", name="b-job", **eu)
        until(lambda: bool(api.backend.stops_of(self.a_job)), "the preemption of team ml-a's job")
        api.exit(self.a_job, 143)  # it saved its checkpoint and left: requeued
        api.wait_for(self.a_job, [JobState.PENDING])
        api.start(self.b_job)
        self.vision_job = api.submit("vision", queue="ml-b", name="v-job")
        api.finish(self.vision_job)
        self.done_b = api.submit("b", queue="ml-b", name="b-done")
        api.finish(self.done_b)
        self.spare = api.client.post("/v1/tokens", json={"team": "spare"}, headers=api.auth("admin")).json()[
            "id"
        ]


def _cancel_target(api: Api) -> str:
    job = api.submit("a", name="to-cancel", data_region="eu-west")  # waits: eu-west is full
    api.wait_for(job, [JobState.PENDING])
    return job


WHO = ["admin", "a", "b", "vision", "revoked", "wrong", "none"]
SPEC = {"name": "m", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"], "data_region": "cn-north"}


def _request(api: Api, w: World, who: str, route: str) -> Any:
    fixed = {"wrong": {"Authorization": "Bearer corral_not-a-token-at-all"}, "none": {}}
    headers = fixed[who] if who in fixed else api.auth(who)
    c = api.client
    a = w.a_job
    if route == "cancel":
        return c.post(
            f"/v1/jobs/{_cancel_target(api) if who in ('a', 'admin') else a}/cancel", headers=headers
        )
    if route == "revoke":
        return c.delete(f"/v1/tokens/{w.spare}", headers=headers)
    method, path, body = {
        "whoami": ("GET", "/v1/whoami", None),
        "submit": ("POST", "/v1/jobs", SPEC),
        "list": ("GET", "/v1/jobs?all=true", None),
        "get": ("GET", f"/v1/jobs/{a}", None),
        "events": ("GET", f"/v1/jobs/{a}/events", None),
        "logs": ("GET", f"/v1/jobs/{a}/logs", None),
        "queues": ("GET", "/v1/queues", None),
        "nodes": ("GET", "/v1/nodes", None),
        "history": ("GET", "/v1/history", None),
        "audit": ("GET", "/v1/audit", None),
        "audit-job": ("GET", f"/v1/audit?job_id={a}", None),
        "tokens-create": ("POST", "/v1/tokens", {"team": "x"}),
        "tokens-list": ("GET", "/v1/tokens", None),
    }[route]
    return c.request(method, path, json=body, headers=headers)


ROUTES = [
    "whoami", "submit", "list", "get", "cancel", "events", "logs", "queues", "nodes", "history",
    "audit", "audit-job", "tokens-create", "tokens-list", "revoke",
]  # fmt: skip
OWNER = {"tokens-create": 403, "tokens-list": 403, "revoke": 403, "submit": 201, "cancel": 202}
OTHER = {**OWNER, "get": 404, "cancel": 404, "events": 404, "logs": 404, "audit-job": 404}
EXPECTED: dict[str, dict[str, int]] = {
    "admin": {"submit": 201, "cancel": 202, "tokens-create": 201},
    "a": OWNER,
    "b": OTHER,
    "vision": {**OTHER, "submit": 403},  # its token may submit to ml-b only
    "revoked": dict.fromkeys(ROUTES, 401),
    "wrong": dict.fromkeys(ROUTES, 401),
    "none": dict.fromkeys(ROUTES, 401),
}


def test_every_route_for_every_caller(api: Api) -> None:
    w = World(api)
    a_spec_words = (SECRET_NAME, SECRET_CMD, SECRET_LOG)
    for who in WHO:
        for route in ROUTES:
            r = _request(api, w, who, route)
            status = EXPECTED[who].get(route, 200)
            assert r.status_code == status, (who, route, r.status_code, r.text)
            where = f"{who} {route}"
            if status == 401:
                assert r.json() == {"error": TOKEN_HELP, "field": None}, where
                assert r.headers["WWW-Authenticate"] == "Bearer"
                continue
            if status >= 400:
                error = r.json()
                assert set(error) == {"error", "field"} and "\n" not in error["error"], where
            if status == 404:
                assert r.json()["error"].startswith(f"job {w.a_job} not found"), where
            if who in ("b", "vision"):
                # nothing of team ml-a's job: not its name, command, log, events or audit
                for word in a_spec_words:
                    assert word not in r.text, (where, word)
                if route not in ("get", "events", "logs", "audit-job", "cancel"):
                    assert not _mentions(r.text, w.a_job), (where, r.text[:500])
            if route == "tokens-list" and status == 200:
                listed = r.json()
                assert listed and all("token" not in t and "digest" not in t for t in listed)
                assert all(secret not in r.text for secret in api.secrets.values())
    # the failed attempts changed nothing: team ml-a's job is not cancelled, the spare not revoked
    assert api.store.get(w.a_job).cancel_requested_at is None  # type: ignore[union-attr]


def test_a_team_sees_its_history_without_the_other_teams_job(api: Api) -> None:
    w = World(api)
    mine = api.client.get(f"/v1/jobs/{w.a_job}", headers=api.auth("a")).json()
    assert [e["kind"] for e in mine["history"]][:4] == ["SUBMITTED", "PLACED", "STARTED", "PREEMPTING"]
    assert "REQUEUED" in [e["kind"] for e in mine["history"]]
    visible = json.dumps({k: mine[k] for k in ("history", "audit", "pending_reason")})
    assert not _mentions(visible, w.b_job), visible  # who preempted it is not for team ml-a
    assert "ml-b" not in visible and "b-job" not in visible
    assert all(
        e["related_job"] == "" and e["private_detail"] == "" for e in [*mine["history"], *mine["audit"]]
    )
    events = api.client.get(f"/v1/jobs/{w.a_job}/events", headers=api.auth("a")).text
    audit = api.client.get("/v1/audit", headers=api.auth("a")).text
    assert not _mentions(events, w.b_job) and not _mentions(audit, w.b_job)
    # an admin sees who it was
    admin = api.client.get(f"/v1/jobs/{w.a_job}", headers=api.auth("admin")).json()
    assert any(e["related_job"] == w.b_job for e in [*admin["history"], *admin["audit"]]), admin["history"]


def test_history_events_and_audit_show_private_detail_to_the_related_team_only(api: Api) -> None:
    """The visibility rule itself, on entries written straight to the store (as the controller does)."""
    from scheduler.model.records import AuditRecord, Batch, EventRecord

    _big_ids(api)
    a_job = api.submit("a", name="a1")
    b_job = api.submit("b", queue="ml-b", name="b1")
    a_too = api.submit("a", name="a2")
    for job in (a_job, b_job, a_too):
        api.finish(job)
    now = api.clock.now()
    api.store.apply(
        Batch(
            events=[
                EventRecord(a_job, now, "NOTE", "public", private_detail=f"about {b_job}", related_job=b_job),
                EventRecord(a_job, now, "NOTE", "public", private_detail=f"about {a_too}", related_job=a_too),
            ],
            audit=[AuditRecord(now, a_job, "note", detail="public", private_detail="p", related_job=b_job)],
        )
    )
    history = {h["id"]: h for h in api.client.get("/v1/history", headers=api.auth("a")).json()}
    notes = [e for e in history[a_job]["history"] if e["kind"] == "NOTE"]
    assert [(e["related_job"], e["private_detail"]) for e in notes] == [("", ""), (a_too, f"about {a_too}")]
    assert not _mentions(json.dumps(history), b_job)
    audit = api.client.get("/v1/audit", params={"job_id": a_job}, headers=api.auth("a")).json()
    assert [(x["related_job"], x["private_detail"]) for x in audit if x["decision"] == "note"] == [("", "")]
    admin = api.client.get(f"/v1/jobs/{a_job}/events", headers=api.auth("admin")).json()
    assert [e["related_job"] for e in admin if e["kind"] == "NOTE"] == [b_job, a_too]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "tok-a"}, {"Authorization": "Basic eDp5"}],
)
def test_a_wrong_token_is_401_before_any_body_is_judged(api: Api, headers: dict[str, str]) -> None:
    big = b'{"name": "' + b"x" * 100_000 + b'"}'
    for content, extra in [
        (big, {"Content-Type": "application/json"}),  # oversized (Content-Length)
        (b'{"name": "x",', {"Content-Type": "application/json"}),  # truncated
        (b"\xff\xfe", {"Content-Type": "application/json"}),  # not UTF-8
        (b"name=x", {"Content-Type": "application/x-www-form-urlencoded"}),  # not JSON
    ]:
        r = api.client.post("/v1/jobs", content=content, headers={**headers, **extra})
        assert r.status_code == 401 and r.json()["error"] == TOKEN_HELP, r.text
    chunked = api.client.post(
        "/v1/jobs",
        content=iter([big[:40_000], big[40_000:]]),
        headers={**headers, **{"Content-Type": "application/json"}},
    )
    assert chunked.status_code == 401
    assert api.count() == 0


def test_health_metrics_and_openapi_need_no_token(api: Api) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    schema = api.client.get("/openapi.json").json()
    paths = {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/logs", "/v1/queues", "/v1/tokens"}
    assert paths <= set(schema["paths"])
    assert "requestBody" in schema["paths"]["/v1/jobs"]["post"]  # the spec's schema is documented
    assert api.client.get("/docs").status_code == 200
    r = api.client.get("/metrics", follow_redirects=False)
    assert r.status_code == 200 and "process_cpu_seconds_total" in r.text


def test_whoami_shows_the_tokens_team_and_limits(api: Api) -> None:
    b = api.client.get("/v1/whoami", headers=api.auth("b")).json()
    assert (b["team"], b["admin"], b["queues"], b["max_priority"]) == ("ml-b", False, None, None)
    limited = api.client.get("/v1/whoami", headers=api.auth("limited")).json()
    assert (limited["team"], limited["max_priority"], limited["max_gpus_per_job"]) == ("ml-a", "normal", 8)
    assert limited["allow_protection"] is False
    admin = api.client.get("/v1/whoami", headers=api.auth("admin")).json()
    assert (admin["team"], admin["admin"]) == ("admin", True)


def test_admin_sees_and_acts_on_all_and_filters_by_team(api: Api) -> None:
    a_job = api.submit("a")
    b_job = api.submit("b", queue="ml-b")
    c = api.client
    assert {j["id"] for j in c.get("/v1/jobs", headers=api.auth("admin")).json()} == {a_job, b_job}
    only_b = c.get("/v1/jobs", params={"team": "ml-b"}, headers=api.auth("admin")).json()
    assert [j["id"] for j in only_b] == [b_job]
    assert c.get(f"/v1/jobs/{a_job}", headers=api.auth("admin")).status_code == 200
    assert c.post(f"/v1/jobs/{b_job}/cancel", headers=api.auth("admin")).status_code == 202
    assert c.get("/v1/jobs", params={"team": "ml-b"}, headers=api.auth("a")).status_code == 403
    r = c.post("/v1/jobs", params={"team": "ml-b"}, json=SPEC, headers=api.auth("admin"))
    assert r.status_code == 201 and r.json()["team"] == "ml-b"
