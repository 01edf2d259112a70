"""A corpus of bad requests: each is one line naming the field, the documented status, and leaves
the store's jobs, events and audit exactly as they were."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from scheduler.model.job import JobState
from tests.api.conftest import Api

GOOD: dict[str, Any] = {"name": "train", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]}
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    field: str
    fragment: str
    body: Any = None  # a JSON body (GOOD changed by it, if a dict with "+")
    raw: bytes | None = None  # or raw bytes with `headers`
    headers: dict[str, str] = field(default_factory=dict)
    who: str = "a"
    path: str = "/v1/jobs"
    method: str = "POST"


def spec(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def env(**values: Any) -> dict[str, Any]:
    return spec(env=values)


CASES = [
    # wrong types
    Case("nodes as a word", 422, "nodes", "spec.nodes: must be a whole number", spec(nodes="two")),
    Case("gpus as a string", 422, "gpus_per_node", "must be a whole number", spec(gpus_per_node="4")),
    Case("gpus_per_node: true", 422, "gpus_per_node", "must be a whole number", spec(gpus_per_node=True)),
    Case("gpus as a fraction", 422, "gpus_per_node", "must be a whole number", spec(gpus_per_node=1.5)),
    Case("time limit as text", 422, "time_limit_s", "time_limit_s", spec(time_limit_s="1h")),
    Case("preemptible as text", 422, "preemptible", "must be true or false", spec(preemptible="no")),
    Case("command of numbers", 422, "command.0", "spec.command.0: must be a string", spec(command=[1, 2])),
    Case("env value a number", 422, "env.A", "must be a string", env(A=1)),
    Case("env a list", 422, "env", "spec.env", spec(env=["A=1"])),
    # out of range
    Case("0 GPUs", 422, "gpus_per_node", "must be ≥ 1 (got 0)", spec(gpus_per_node=0)),
    Case("100,000 GPUs", 422, "gpus_per_node", "must be ≤ 64 (got 100000)", spec(gpus_per_node=100_000)),
    Case("5000 nodes", 422, "nodes", "must be ≤ 1024", spec(nodes=5000)),
    Case("-1 nodes", 422, "nodes", "must be ≥ 1", spec(nodes=-1)),
    Case("a negative time limit", 422, "time_limit_s", "must be > 0", spec(time_limit_s=-5)),
    Case("a century's time limit", 422, "time_limit_s", "must be ≤", spec(time_limit_s=1e10)),
    Case("a long grace period", 422, "grace_period_s", "must be ≤ 3600", spec(grace_period_s=4000)),
    Case("a huge integer", 422, "gpus_per_node", "must be ≤ 64", spec(gpus_per_node=10**30)),
    # unknown fields and names
    Case("unknown field", 422, "gpus", "spec.gpus: unknown field", spec(gpus=4)),
    Case("unknown field, long", 422, "'" + "k" * 35 + "...'", "unknown field", {**GOOD, "k" * 5000: 1}),
    Case("empty name", 422, "name", "spec.name: must not be empty", spec(name="")),
    Case("unicode name", 422, "name", "spec.name: must be 1 to 63 letters", spec(name="训练任务")),
    Case(
        "name with escapes",
        422,
        "name",
        "spec.name: must be 1 to 63 letters",
        spec(name="\x1b[31mred\x1b[0m"),
    ),
    Case("name too long", 422, "name", "spec.name", spec(name="n" * 200)),
    Case("a 60 KB GPU type", 422, "gpu_type", "must be at most 64 characters", spec(gpu_type="H" * 60_000)),
    Case("an empty region", 422, "data_region", "spec.data_region: must not be empty", spec(data_region="")),
    Case("an empty command", 422, "command", "spec.command: must not be empty", spec(command=[])),
    Case("a blank command", 422, "command", "must not be empty", spec(command="  ")),
    # reserved environment, paths
    Case(
        "CUDA_VISIBLE_DEVICES",
        422,
        "env",
        "CUDA_VISIBLE_DEVICES is set by the scheduler",
        env(CUDA_VISIBLE_DEVICES="0"),
    ),
    Case("RANK", 422, "env", "RANK is set by the scheduler", env(RANK="3")),
    Case("CORRAL_X", 422, "env", "CORRAL_X is set by the scheduler", env(CORRAL_X="1")),
    Case("a bad env name", 422, "env", "is not a variable name", env(**{"BAD NAME": "x"})),
    Case("a relative path", 422, "working_dir", "must be an absolute path", spec(working_dir="data/run")),
    Case("a .. path", 422, "checkpoint_dir", "must not contain '..'", spec(checkpoint_dir="/ckpt/../etc")),
    # the cluster and the token
    Case("unknown queue", 400, "queue", "unknown queue 'nope'", spec(queue="nope")),
    Case("unknown priority", 400, "priority", "unknown priority class", spec(priority="urgent")),
    Case("a region with no nodes", 400, "data_region", "no nodes in region 'mars'", spec(data_region="mars")),
    Case(
        "priority above the token's",
        403,
        "priority",
        "up to priority 'normal'",
        spec(priority="high"),
        who="limited",
    ),
    Case(
        "GPUs over the token's cap",
        403,
        "gpus_per_node",
        "up to 8 GPUs per job",
        spec(nodes=2, gpus_per_node=8),
        who="limited",
    ),
    Case(
        "not preemptible", 403, "preemptible", "may not submit non-preemptible jobs", spec(preemptible=False)
    ),
    Case("another team's queue", 403, "queue", "may not submit to 'ml-a'", spec(), who="vision"),
    Case(
        "acting for another team",
        403,
        "team",
        "only an admin may act for another team",
        spec(),
        path="/v1/jobs?team=ml-b",
    ),
    # idempotency
    Case(
        "key conflict",
        422,
        "idempotency_key",
        "differs from the spec's",
        spec(idempotency_key="k1"),
        headers={"Idempotency-Key": "k2"},
    ),
    Case("key with spaces", 422, "idempotency_key", "printable ASCII", spec(idempotency_key="a b")),
    Case(
        "key header too long",
        422,
        "Idempotency-Key",
        "header.Idempotency-Key",
        spec(),
        headers={"Idempotency-Key": "k" * 200},
    ),
    # the body itself
    Case("a list", 422, "spec", "spec: must be a mapping", [1, 2]),
    Case("null", 422, "spec", "spec: must be a mapping", None, raw=b"null", headers=JSON),
    Case("truncated JSON", 422, "body", "body: malformed JSON", raw=b'{"name": "x",', headers=JSON),
    Case(
        "duplicate keys",
        422,
        "name",
        "body: duplicate key 'name'",
        raw=b'{"name": "a", "name": "b"}',
        headers=JSON,
    ),
    Case("NaN", 422, "body", "NaN is not a number JSON allows", raw=b'{"time_limit_s": NaN}', headers=JSON),
    Case(
        "Infinity", 422, "body", "Infinity is not a number", raw=b'{"time_limit_s": Infinity}', headers=JSON
    ),
    Case("1e309", 422, "body", "too large for a double", raw=b'{"time_limit_s": 1e309}', headers=JSON),
    Case(
        "5,000 digits", 422, "body", "too many digits", raw=b'{"nodes": ' + b"9" * 5000 + b"}", headers=JSON
    ),
    Case("20,000 deep", 422, "body", "nested too deeply", raw=b"[" * 20_000 + b"]" * 20_000, headers=JSON),
    Case("not UTF-8", 422, "body", "body: not valid UTF-8", raw=b'{"name": "\xff\xfe"}', headers=JSON),
    Case(
        "form data",
        415,
        "body",
        "content type 'application/x-www-form-urlencoded' is not JSON",
        raw=b"name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case("no content type", 415, "body", "content type 'none' is not JSON", raw=b"{}"),
    Case("oversized", 413, "body", "64 KiB limit", raw=b'{"name": "' + b"x" * 70_000 + b'"}', headers=JSON),
    # ids and cursors
    Case(
        "id beyond 64 bits",
        404,
        "id",
        "job 9999999999999999999 not found",
        method="GET",
        path="/v1/jobs/9999999999999999999",
    ),
    Case(
        "id 20 digits",
        404,
        "id",
        "job 00000000000000000001 not found",
        method="GET",
        path="/v1/jobs/00000000000000000001",
    ),
    Case("negative id", 404, "id", "job -1 not found", method="GET", path="/v1/jobs/-1"),
    Case("id 1e3", 404, "id", "job 1e3 not found", method="GET", path="/v1/jobs/1e3"),
    Case("id abc", 404, "id", "job abc not found", method="POST", path="/v1/jobs/abc/cancel"),
    Case("unicode digits", 404, "id", "not found", method="GET", path="/v1/jobs/%D9%A3/events"),
    Case("audit of a bad id", 404, "id", "job 1e3 not found", method="GET", path="/v1/audit?job_id=1e3"),
    Case(
        "cursor beyond 64 bits",
        422,
        "after_seq",
        "query.after_seq: must be ≤",
        method="GET",
        path=f"/v1/audit?after_seq={2**63}",
    ),
    Case("negative cursor", 422, "after", "query.after: must be ≥ 0", method="GET", path="/v1/jobs?after=-1"),
    Case(
        "page too big",
        422,
        "limit",
        "query.limit: must be ≤ 1000",
        method="GET",
        path="/v1/history?limit=5000",
    ),
]


def _send(api: Api, case: Case) -> Any:
    headers = {**api.auth(case.who), **case.headers}
    if case.method == "GET":
        return api.client.get(case.path, headers=headers)
    if case.raw is not None:
        return api.client.post(case.path, content=case.raw, headers=headers)
    return api.client.post(case.path, content=json.dumps(case.body).encode(), headers={**JSON, **headers})


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_request_is_one_line_naming_the_field_and_changes_nothing(api: Api, case: Case) -> None:
    existing = api.submit()  # a job to keep: the request must not touch it
    api.wait_for(existing, [JobState.STARTING])
    before = api.counts()
    r = _send(api, case)
    assert r.status_code == case.status, r.text[:500]
    error = r.json()
    assert set(error) == {"error", "field"}
    assert error["field"] == case.field, error
    assert case.fragment in error["error"], error
    message = error["error"]
    assert "\n" not in message and "\x1b" not in message and len(message) < 400, message
    assert "Traceback" not in message and "There was an error parsing" not in message
    assert api.counts() == before


def test_a_leading_zero_names_the_same_job_on_every_route(api: Api) -> None:
    job = api.submit()
    api.finish(job)
    (api.log_dir / f"{job}.log").write_text("hello\n")
    padded = "00" + job
    c, a = api.client, api.auth("a")
    assert c.get(f"/v1/jobs/{padded}", headers=a).json()["id"] == job
    assert next(e["job_id"] for e in c.get(f"/v1/jobs/{padded}/events", headers=a).json()) == job
    assert c.get(f"/v1/jobs/{padded}/logs", headers=a).text == "hello\n"
    assert next(x["job_id"] for x in c.get("/v1/audit", params={"job_id": padded}, headers=a).json()) == job
    finished = c.post(f"/v1/jobs/{padded}/cancel", headers=a)
    assert finished.status_code == 409 and f"job {job} already finished" in finished.json()["error"]
