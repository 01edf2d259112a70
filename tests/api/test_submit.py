"""POST /v1/jobs: validation order, one-line errors naming the field, idempotency, dry run."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.model.job import JobState
from tests.api.conftest import Api

GOOD: dict[str, Any] = {"name": "train", "queue": "ml-a", "gpus_per_node": 4, "command": ["true"]}


def test_submit_creates_a_pending_job_of_the_tokens_team(api: Api) -> None:
    r = api.client.post("/v1/jobs", json=GOOD, headers=api.auth("a"))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["id"].isdecimal()
    assert (job["team"], job["queue"], job["state"], job["gpus"]) == ("ml-a", "ml-a", "PENDING", 4)
    assert job["spec"]["command"] == ["true"]
    # the controller was woken and placed it (the scripted backend was asked to start it)
    assert api.wait_for(job["id"], [JobState.STARTING]).allocation is not None
    assert (job["id"], 0) in api.backend.started


def test_admin_may_submit_for_a_team_but_a_team_may_not(api: Api) -> None:
    r = api.client.post("/v1/jobs", params={"team": "ml-b"}, json=GOOD, headers=api.auth("admin"))
    assert r.status_code == 201 and r.json()["team"] == "ml-b"
    r = api.client.post("/v1/jobs", params={"team": "ml-b"}, json=GOOD, headers=api.auth("a"))
    assert r.status_code == 403 and r.json()["field"] == "team"
    assert api.count() == 1


def test_same_idempotency_key_returns_the_same_job(api: Api) -> None:
    headers = {**api.auth("a"), "Idempotency-Key": "k-1"}
    first = api.client.post("/v1/jobs", json=GOOD, headers=headers)
    again = api.client.post("/v1/jobs", json=GOOD, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    in_body = api.client.post("/v1/jobs", json={**GOOD, "idempotency_key": "k-1"}, headers=api.auth("a"))
    assert in_body.status_code == 200 and in_body.json()["id"] == first.json()["id"]
    # another team's key space is its own
    other = api.client.post("/v1/jobs", json=GOOD, headers={**api.auth("b"), "Idempotency-Key": "k-1"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert api.count() == 2


def test_same_key_with_a_different_spec_is_a_conflict(api: Api) -> None:
    headers = {**api.auth("a"), "Idempotency-Key": "k-2"}
    assert api.client.post("/v1/jobs", json=GOOD, headers=headers).status_code == 201
    r = api.client.post("/v1/jobs", json={**GOOD, "gpus_per_node": 8}, headers=headers)
    assert r.status_code == 409
    assert r.json()["field"] == "idempotency_key" and "k-2" in r.json()["error"]
    assert api.count() == 1


BAD: list[tuple[str, Any, int, str, str]] = [
    # (case, body, status, field, fragment of the message)
    ("unknown queue", {**GOOD, "queue": "nope"}, 400, "queue", "unknown queue 'nope'"),
    ("unknown priority", {**GOOD, "priority": "urgent"}, 400, "priority", "unknown priority class"),
    ("0 GPUs", {**GOOD, "gpus_per_node": 0}, 422, "gpus_per_node", "must be ≥ 1 (got 0)"),
    ("100,000 GPUs", {**GOOD, "gpus_per_node": 100_000}, 422, "gpus_per_node", "must be ≤ 64 (got 100000)"),
    ("too many nodes", {**GOOD, "nodes": 5000}, 422, "nodes", "must be ≤ 1024"),
    ("unknown GPU type", {**GOOD, "gpu_type": "V100"}, 400, "gpu_type", "no V100 nodes"),
    (
        "region with no nodes",
        {**GOOD, "data_region": "mars"},
        400,
        "data_region",
        "no nodes in region 'mars'",
    ),
    ("type not in region", {**GOOD, "gpu_type": "A100", "data_region": "eu-west"}, 400, "gpu_type", "A100"),
    (
        "gang too wide",
        {**GOOD, "nodes": 3, "gpus_per_node": 8, "gpu_type": "H100"},
        400,
        "nodes",
        "at most 2",
    ),
    ("node too small", {**GOOD, "gpus_per_node": 16}, 400, "gpus_per_node", "largest node"),
    ("unknown field", {**GOOD, "gpus": 4}, 422, "gpus", "unknown field"),
    ("wrong type", {**GOOD, "nodes": "two"}, 422, "nodes", "whole number"),
    ("not an object", [1, 2], 422, "spec", "mapping"),
]


@pytest.mark.parametrize(("case", "body", "status", "field", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_specs_are_refused_with_one_line_naming_the_field(
    api: Api, case: str, body: Any, status: int, field: str, fragment: str
) -> None:
    r = api.client.post("/v1/jobs", json=body, headers=api.auth("a"))
    assert r.status_code == status, r.text
    error = r.json()
    assert error["field"] == field
    assert fragment in error["error"] and "\n" not in error["error"]
    assert api.count() == 0 and api.backend.started == []


def test_malformed_json_is_422_naming_the_body(api: Api) -> None:
    r = api.client.post(
        "/v1/jobs", content=b'{"name": "x",', headers={**api.auth("a"), "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["field"] == "body" and "malformed JSON" in r.json()["error"]
    assert api.count() == 0


def test_oversized_body_is_413_naming_the_limit(api: Api) -> None:
    body = {**GOOD, "env": {f"V{i}": "x" * 100 for i in range(1000)}}
    r = api.client.post("/v1/jobs", json=body, headers=api.auth("a"))
    assert r.status_code == 413
    assert "64 KiB" in r.json()["error"] and r.json()["field"] == "body"
    # chunked, without a Content-Length: still refused while reading
    big = b'{"name": "' + b"x" * 70_000 + b'"}'
    r = api.client.post(
        "/v1/jobs",
        content=iter([big[:40_000], big[40_000:]]),
        headers={**api.auth("a"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert api.count() == 0


def test_dry_run_says_where_it_would_go_and_stores_nothing(api: Api) -> None:
    eu = {**GOOD, "nodes": 2, "gpus_per_node": 8, "gpu_type": "H100", "data_region": "eu-west"}
    r = api.client.post("/v1/jobs", params={"dry_run": "true"}, json=eu, headers=api.auth("a"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["dry_run"] is True and out["pending_reason"] is None and out["rejected"] is None
    assert sorted(a["node"] for a in out["allocation"]) == ["eu-west-r1-n00", "eu-west-r1-n01"]
    assert all(a["gpus"] == list(range(8)) for a in out["allocation"])
    assert api.counts() == (0, 0, 0) and api.backend.started == []
    # the region taken by a running job: the controller's snapshot says it would wait, and why
    api.start(api.submit(**{k: v for k, v in eu.items() if k != "name"}))
    r = api.client.post("/v1/jobs", params={"dry_run": "true"}, json=eu, headers=api.auth("b"))
    out = r.json()
    assert r.status_code == 200 and out["allocation"] is None and out["rejected"] is None
    assert out["pending_reason"].startswith(("Resources", "QuotaExceeded")), out
    assert api.count() == 1
    bad = api.client.post(
        "/v1/jobs", params={"dry_run": "true"}, json={**GOOD, "queue": "x"}, headers=api.auth("a")
    )
    assert bad.status_code == 400 and bad.json()["field"] == "queue"
