"""Tokens through the API: create (shown once), list (no secret), revoke (at once), limits, rate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from scheduler.api.app import TOKEN_HELP, ApiSettings
from scheduler.api.auth import TokenCache
from scheduler.store.token_store import TokenLimits, TokenStore
from tests.api.conftest import Api, running_api

SPEC: dict[str, Any] = {"name": "j", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]}


def create(api: Api, **body: Any) -> dict[str, Any]:
    r = api.client.post("/v1/tokens", json=body, headers=api.auth("admin"))
    assert r.status_code == 201, r.text
    return dict(r.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_is_shown_once_stored_hashed_and_listed_without_secrets(api: Api) -> None:
    made = create(api, team="vision", queues=["ml-b"], description="CI of vision")
    token = made["token"]
    assert token.startswith("corral_") and len(token) >= 40 and made["prefix"] == token[:13]
    assert (made["team"], made["queues"], made["active"]) == ("vision", ["ml-b"], True)
    assert made["created_by"].startswith("admin (token ")
    who = api.client.get("/v1/whoami", headers=bearer(token)).json()
    assert (who["team"], who["token_id"], who["queues"]) == ("vision", made["id"], ["ml-b"])
    listed = api.client.get("/v1/tokens", headers=api.auth("admin"))
    assert token not in listed.text and all("token" not in t for t in listed.json())
    row = next(t for t in listed.json() if t["id"] == made["id"])
    assert row["description"] == "CI of vision" and row["prefix"] == made["prefix"]
    # the store has the digest, never the token
    from sqlalchemy import text

    with api.store.engine.connect() as connection:
        dump = " ".join(str(r) for r in connection.execute(text("SELECT * FROM tokens")))
    assert token not in dump and token[13:] not in dump


def test_revoke_takes_effect_at_once_and_keeps_the_record(api: Api) -> None:
    made = create(api, team="ml-a")
    headers = bearer(made["token"])
    assert api.client.get("/v1/jobs", headers=headers).status_code == 200  # now cached
    r = api.client.delete(f"/v1/tokens/{made['id']}", headers=api.auth("admin"))
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["revoked_at"]
    refused = api.client.get("/v1/jobs", headers=headers)
    assert refused.status_code == 401 and refused.json()["error"] == TOKEN_HELP
    again = api.client.delete(f"/v1/tokens/0{made['id']}", headers=api.auth("admin"))  # 0-padded: same
    assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]
    for bad in ("424242", "abc", "-1", "9999999999999999999"):
        missing = api.client.delete(f"/v1/tokens/{bad}", headers=api.auth("admin"))
        assert missing.status_code == 404 and missing.json()["field"] == "id", bad


def test_the_last_admin_token_cannot_be_revoked(api: Api) -> None:
    admin_id = api.client.get("/v1/whoami", headers=api.auth("admin")).json()["token_id"]
    last = api.client.delete(f"/v1/tokens/{admin_id}", headers=api.auth("admin"))
    assert last.status_code == 409 and "last admin token" in last.json()["error"]
    second = create(api, team="ops", admin=True)
    assert api.client.delete(f"/v1/tokens/{admin_id}", headers=bearer(second["token"])).status_code == 200
    assert api.client.get("/v1/tokens", headers=api.auth("admin")).status_code == 401


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"team": "x", "queues": ["nope"]}, "queues", "token.queues: unknown queue 'nope'"),
        ({"team": "x", "max_priority": "urgent"}, "max_priority", "unknown priority class 'urgent'"),
        ({"team": "x", "admin": True, "queues": ["ml-a"]}, "admin", "an admin token has no limits"),
        ({"team": "bad team!"}, "team", "token.team: must be 1 to 63 letters"),
        ({"team": ""}, "team", "token.team"),
        ({}, "team", "token.team: is required"),
        ({"team": "x", "queue": ["ml-a"]}, "queue", "unknown field (allowed: admin, allow_protection"),
        ({"team": "x", "max_gpus_per_job": 0}, "max_gpus_per_job", "must be ≥ 1"),
        ({"team": "x", "max_gpus_per_job": True}, "max_gpus_per_job", "whole number"),
        ({"team": "x", "admin": "yes"}, "admin", "true or false"),
        ({"team": "x", "queues": []}, "queues", "token.queues"),
        ({"team": "x", "description": "d" * 300}, "description", "at most 256"),
    ],
)
def test_a_bad_token_request_is_one_line_naming_the_field(
    api: Api, body: dict[str, Any], field: str, fragment: str
) -> None:
    before = len(api.tokens.list())
    r = api.client.post("/v1/tokens", json=body, headers=api.auth("admin"))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and fragment in r.json()["error"], r.json()
    assert "\n" not in r.json()["error"] and len(api.tokens.list()) == before


LIMITS: list[tuple[str, str, dict[str, Any], str, str]] = [
    # (case, token, spec changes, field, message)
    (
        "priority above the token's",
        "limited",
        {"priority": "high"},
        "priority",
        "spec.priority: this token may submit up to priority 'normal' (asked 'high'): "
        "ask an admin for a token with a higher --max-priority",
    ),
    (
        "more GPUs than the cap",
        "limited",
        {"nodes": 2, "gpus_per_node": 8, "gpu_type": "H100"},
        "gpus_per_node",
        "spec.gpus_per_node: this token may use up to 8 GPUs per job (asked 2 × 8 = 16)",
    ),
    (
        "not preemptible without the permission",
        "a",
        {"preemptible": False},
        "preemptible",
        "spec.preemptible: this token may not submit non-preemptible jobs",
    ),
    (
        "protection beyond the policy's",
        "a",
        {"min_runtime_s": 60},
        "min_runtime_s",
        "spec.min_runtime_s: this token may ask for at most 0 s (asked 60 s)",
    ),
    (
        "a queue it may not use",
        "vision",
        {"queue": "ml-a"},
        "queue",
        "spec.queue: this token of team 'vision' may not submit to 'ml-a': use one of ml-b",
    ),
]


@pytest.mark.parametrize(("case", "who", "changes", "field", "message"), LIMITS, ids=[c[0] for c in LIMITS])
def test_a_submission_over_the_tokens_limits_is_403_naming_the_limit(
    api: Api, case: str, who: str, changes: dict[str, Any], field: str, message: str
) -> None:
    before = api.counts()
    r = api.client.post("/v1/jobs", json={**SPEC, **changes}, headers=api.auth(who))
    assert r.status_code == 403, r.text
    assert r.json()["field"] == field and r.json()["error"].startswith(message), r.json()
    assert api.counts() == before and api.backend.started == []
    # within the limits, or as an admin, the same spec goes through
    assert api.client.post("/v1/jobs", json={**SPEC, **changes}, headers=api.auth("admin")).status_code == 201


def test_within_the_limits_a_limited_token_submits(api: Api) -> None:
    ok = [{"priority": "normal"}, {"priority": "low"}, {"gpus_per_node": 8, "gpu_type": "H100"}]
    for changes in ok:
        r = api.client.post("/v1/jobs", json={**SPEC, **changes}, headers=api.auth("limited"))
        assert r.status_code == 201, r.text
    protected = create(api, team="ml-a", allow_protection=True)["token"]
    for changes in ({"preemptible": False}, {"min_runtime_s": 3600}):
        r = api.client.post("/v1/jobs", json={**SPEC, **changes}, headers=bearer(protected))
        assert r.status_code == 201, r.text


def test_the_request_rate_is_limited_per_token_and_admins_are_exempt(tmp_path: Path) -> None:
    with running_api(tmp_path, ApiSettings(rate_per_s=2.0, burst=3, log_poll_s=0.05)) as api:
        codes = [api.client.get("/v1/queues", headers=api.auth("a")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = api.client.get("/v1/queues", headers=api.auth("a"))
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"].startswith("too many requests: this token may send 2 requests/s")
        # another token has its own bucket; an admin has none
        assert api.client.get("/v1/queues", headers=api.auth("b")).status_code == 200
        assert all(
            api.client.get("/v1/queues", headers=api.auth("admin")).status_code == 200 for _ in range(20)
        )
        time.sleep(0.6)  # the bucket refills at 2/s
        assert api.client.get("/v1/queues", headers=api.auth("a")).status_code == 200


def test_another_replicas_cache_forgets_a_revoked_token_within_its_ttl(api: Api) -> None:
    now = [100.0]
    replica = TokenCache(TokenStore(api.store.engine), ttl_s=5.0, clock=lambda: now[0])
    token, record = api.tokens.create("ml-a", limits=TokenLimits(max_gpus_per_job=4), created_by="t", now=1.0)
    who = replica.lookup(token)
    assert who is not None and (who.team, who.max_gpus_per_job, who.token_id) == ("ml-a", 4, record.id)
    api.tokens.revoke(record.id, 2.0)  # by another process: this cache is not told
    assert replica.lookup(token) == who
    now[0] += 5.1
    assert replica.lookup(token) is None
    assert replica.lookup("corral_unknown") is None and replica.cached("corral_unknown") == (True, None)
    fresh, _ = api.tokens.create("ml-b", created_by="t", now=3.0)
    replica.invalidate()  # what the API does after it creates or revokes one
    assert replica.lookup(fresh) is not None
