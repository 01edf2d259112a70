"""`corral audit head | verify | export` end to end: the real CLI (a subprocess) against the real
served app; the export checked with the README's offline recipe (plain python, no Corral code), on
SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from scheduler.model.job import JobState
from scheduler.store import engine as engines
from scheduler.store.local_postgres import LocalPostgres
from tests.api.harness import HOLDING, ROOT, Served, one_line_error, until


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[LocalPostgres]:
    server = LocalPostgres.start(fast=True)  # a throwaway server: PostgreSQL that cannot start fails
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def served_on_each_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """`served` on a SQLite file, then on a fresh PostgreSQL database."""
    url = None
    if request.param == "postgresql":
        server: LocalPostgres = request.getfixturevalue("postgres_server")
        url = server.create_database(f"a_{uuid.uuid4().hex}")
    with Served(tmp_path, db_url=url) as s:
        assert s.h.store.dialect == request.param
        yield s


def _recipe(tmp: Path) -> Path:
    """The offline recipe exactly as README documents it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- audit-recipe -->\n```python\n(.*?)```\n<!-- /audit-recipe -->", readme, re.S)
    assert found, "README lost its audit recipe"
    script = tmp / "recipe.py"
    script.write_text(found.group(1), encoding="utf-8")
    return script


def _run_recipe(script: Path, export: Path) -> subprocess.CompletedProcess[str]:
    # -I: isolated (no cwd, no PYTHONPATH, no user site): the recipe cannot import Corral
    return subprocess.run(
        [sys.executable, "-I", str(script), str(export)], capture_output=True, text=True, cwd=script.parent
    )


def _place(served: Served, region: str, n: int = 1) -> list[str]:
    ids = []
    with httpx.Client(base_url=served.server.url, timeout=30) as http:
        for i in range(n):
            body = {"name": f"{region}-{i}", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]}
            r = http.post("/v1/jobs", json={**body, "data_region": region}, headers=served.h.auth("a"))
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    for job in ids:
        served.h.wait_for(job, HOLDING)
    return ids


def test_verify_passes_untouched_and_names_the_record_edited_by_hand(served: Served) -> None:
    admin = served.cli("admin")
    _place(served, "cn-north", 2)
    head = admin("audit", "head")
    assert head.returncode == 0, head.stderr
    seq, hash_ = head.stdout.strip().split(":")
    assert int(seq) >= 5 and len(hash_) == 64  # config, 6 token records, 2 placements at least
    ok = admin("audit", "verify", "--head", head.stdout.strip())
    assert ok.returncode == 0 and ok.stdout.startswith("ok: ") and ok.stdout.count("\n") == 1, ok.stderr
    with engines.write(served.h.store.engine) as connection:
        connection.execute(sa.text("UPDATE audit SET detail = 'nowhere' WHERE seq = 3"))
    one_line_error(admin("audit", "verify"), 1, "audit chain broken at record 3", "was edited")
    with engines.write(served.h.store.engine) as connection:
        connection.execute(sa.text("DELETE FROM audit WHERE seq = 3"))
    one_line_error(admin("audit", "verify"), 1, "record 4 does not link to record 2: record 3 removed")


def test_audit_commands_fail_in_one_line_with_the_documented_code(served: Served) -> None:
    admin, team = served.cli("admin"), served.cli("a")
    one_line_error(team("audit", "verify"), 4, "only an admin may read the audit chain")
    one_line_error(team("audit", "head"), 4, "only an admin")
    one_line_error(admin("audit", "verify", "--head", "12:zz"), 2, "--head", "is not SEQ:HASH")
    one_line_error(admin("audit", "export", "--region", "cn-north"), 2, "--output")
    one_line_error(admin("audit", "export", "--region", "x", "--since", "yesterday", "-o", "f"), 2, "--since")
    missing = served.tmp / "nope.url"
    one_line_error(admin("audit", "verify", "--db-url-file", missing), 2, "--db-url-file", "cannot read")
    head = served.h.store.audit_head()
    assert head is not None
    ahead = f"{head[0] + 5}:{'a' * 64}"
    one_line_error(
        admin("audit", "verify", "--head", ahead), 1, f"records {head[0] + 1}-{head[0] + 5} removed"
    )


def test_export_holds_exactly_the_regions_placements_and_the_recipe_verifies_it(
    served_on_each_store: Served,
) -> None:
    served = served_on_each_store
    admin = served.cli("admin")
    cn = _place(served, "cn-north", 2)
    eu = _place(served, "eu-west", 1)
    served.h.finish(cn[0], JobState.CANCELLED)  # a cancel of a running cn-north job: audited too
    out = served.tmp / "cn.jsonl"
    run = admin("audit", "export", "--region", "cn-north", "-o", out)
    assert run.returncode == 0 and run.stdout == "", run.stderr
    assert "exported" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    header, *lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    full = [line["record"] for line in lines if "record" in line]
    placed = [(r["job_id"], tuple(r["node_regions"])) for r in full if r["decision"] == "place"]
    assert sorted(placed) == sorted((job, ("cn-north",)) for job in cn)
    assert all(r["data_region"] == "cn-north" and r["residency_ok"] for r in full)
    assert {r["decision"] for r in full} >= {"place", "cancel-request", "cancel"}
    assert {r["job_id"] for r in full} == set(cn) and not set(eu) & {r["job_id"] for r in full}
    assert all(set(line) == {"seq", "prev_hash", "hash", "digest"} for line in lines if "record" not in line)
    head = served.h.store.audit_head()
    assert header["head"] == {"seq": head[0], "hash": head[1]} and header["records"] == len(full)  # type: ignore[index]
    assert [line["seq"] for line in lines] == list(range(1, head[0] + 1))  # type: ignore[index]

    script = _recipe(served.tmp)
    ok = _run_recipe(script, out)
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: {len(full)} records"), ok.stderr

    # an export edited after the fact fails the recipe
    text = out.read_text(encoding="utf-8")
    for was, forged in [
        ('"node_regions": ["cn-north"]', '"node_regions": ["xx"]'),  # the readable record
        ('\\"node_regions\\":[\\"cn-north\\"]', '\\"node_regions\\":[\\"xx\\"]'),  # the canonical text
    ]:
        assert was in text, was
        bad = served.tmp / "forged.jsonl"
        bad.write_text(text.replace(was, forged, 1), encoding="utf-8")
        assert _run_recipe(script, bad).returncode != 0, was
    dropped = served.tmp / "dropped.jsonl"
    kept = out.read_text(encoding="utf-8").splitlines()
    dropped.write_text("\n".join(kept[:3] + kept[4:]) + "\n", encoding="utf-8")
    assert "link" in _run_recipe(script, dropped).stderr

    # a window: only records from --since on, still chained to the head
    since = full[-1]["time"]
    run = admin("audit", "export", "--region", "cn-north", "--since", str(since), "-o", out)
    assert run.returncode == 0, run.stderr
    assert _run_recipe(script, out).returncode == 0
    _, *window = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert window and all(json.loads(w["canonical"])["time"] >= since for w in window if "canonical" in w)

    # one record, in the shell (jq + sha256sum), as README shows it
    line = next(x for x in out.read_text(encoding="utf-8").splitlines() if '"canonical"' in x)
    shell = (
        'd=$(jq -j .canonical <<<"$line" | sha256sum | cut -c1-64); '
        'printf \'%s\\n%s\' "$(jq -r .prev_hash <<<"$line")" "$d" | sha256sum | cut -c1-64'
    )
    got = subprocess.run(
        ["bash", "-c", shell], env={"line": line, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert got.stdout.strip() == json.loads(line)["hash"], got.stderr


def test_denied_requests_tokens_and_cancels_are_audited_with_who(served: Served) -> None:
    with httpx.Client(base_url=served.server.url, timeout=30) as http:
        assert (
            http.get("/v1/jobs", headers={"Authorization": "Bearer corral_WrongTokenXYZ"}).status_code == 401
        )
        assert http.get("/v1/tokens", headers=served.h.auth("a")).status_code == 403
        assert http.get("/v1/jobs").status_code == 401
    until(
        lambda: len([r for r in served.h.store.audit(limit=None) if r.decision == "denied"]) >= 3, "denials"
    )
    records = served.h.store.audit(limit=None)
    denied = [(r.actor, r.detail) for r in records if r.decision == "denied"]
    assert denied[0][0] == "unknown token corral_WrongT…" and denied[0][1].startswith(
        "401 GET /v1/jobs: invalid"
    )
    assert denied[1][0].startswith("ml-a (token ") and denied[1][1].startswith(
        "403 GET /v1/tokens: tokens: only"
    )
    assert denied[2] == ("anonymous", denied[2][1]) and denied[2][1].startswith("401 GET /v1/jobs")
    made = [r for r in records if r.decision == "token-create"]
    assert len(made) == 6 and made[-1].actor.startswith("admin (token ") and "team ml-a" in made[-1].detail
    assert [r.decision for r in records].count("token-revoke") == 1
    assert made[0].actor == "corral serve" and "bootstrap" in made[0].private_detail  # before the controller
    assert [(r.decision, r.actor) for r in records if r.decision == "config"] == [("config", "controller")]
    assert "corral_" not in json.dumps([r.detail for r in records if r.decision.startswith("token")]).replace(
        "(corral_", ""
    )  # prefixes only, never a token


def _scraped(served: Served, name: str) -> float:
    """The value of the unlabelled metric `name` in what /metrics serves (no token: as Prometheus)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{served.server.url}/metrics", timeout=30).text
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
    assert len(values) == 1, (name, values)
    return float(values[0])


def test_the_head_metric_is_the_seq_corral_audit_head_prints(served: Served) -> None:
    admin = served.cli("admin")

    def head_seq() -> int:
        run = admin("audit", "head")
        assert run.returncode == 0, run.stderr
        return int(run.stdout.strip().split(":")[0])

    first = head_seq()
    assert first >= 7 and _scraped(served, "corral_audit_head_seq") == first  # config and tokens
    jobs = _place(served, "cn-north", 2)
    served.h.finish(jobs[0], JobState.CANCELLED)  # a cancel request and a cancel
    with httpx.Client(base_url=served.server.url, timeout=30) as http:  # a denial (written in batches)
        assert http.get("/v1/tokens", headers=served.h.auth("a")).status_code == 403
    until(lambda: any(r.decision == "denied" for r in served.h.store.audit(limit=None)), "the denial")
    seq = head_seq()
    assert seq >= first + 5  # 2 placements, cancel request, cancel, denial
    assert _scraped(served, "corral_audit_head_seq") == seq
    assert head_seq() == seq  # nothing was audited meanwhile
