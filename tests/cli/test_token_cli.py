"""`corral token` end to end: the real CLI (a subprocess) against the real served app (uvicorn)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.harness import Served, one_line_error


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        yield s


def test_create_use_list_and_revoke_a_token(served: Served) -> None:
    admin = served.cli("admin")
    made = admin(
        "token", "create", "--team", "vision", "--queues", "ml-b", "--max-priority", "normal",
        "--max-gpus", "8", "--description", "vision CI",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    assert made.stdout == token + "\n" and token.startswith("corral_")  # only the token on stdout
    assert "created token" in made.stderr and "team vision" in made.stderr and token not in made.stderr

    vision = served.cli(None, "vision")
    vision.env["CORRAL_TOKEN"] = token
    job = vision("submit", "--queue", "ml-b", "-q", "--", "true")
    assert job.returncode == 0, job.stderr
    record = served.h.store.get(job.stdout.strip())
    assert record is not None and record.team == "vision"
    one_line_error(vision("submit", "--queue", "ml-a", "--", "true"), 4, "may not submit to 'ml-a'")
    one_line_error(
        vision("submit", "--queue", "ml-b", "--priority", "high", "--", "true"),
        4,
        "spec.priority: this token may submit up to priority 'normal' (asked 'high')",
    )

    table = admin("token", "list")
    assert table.returncode == 0, table.stderr
    assert token not in table.stdout and token[13:] not in table.stdout
    row = next(line for line in table.stdout.splitlines() if "vision CI" in line)
    assert token[:13] in row and "queues=ml-b" in row and "max-priority=normal" in row and "active" in row
    listed = json.loads(admin("token", "list", "-o", "json").stdout)
    mine = next(t for t in listed if t["description"] == "vision CI")
    assert "token" not in mine and mine["max_gpus_per_job"] == 8

    revoked = admin("token", "revoke", mine["id"])
    assert revoked.returncode == 0 and f"revoked token {mine['id']}" in revoked.stderr, revoked.stderr
    one_line_error(vision("jobs"), 4, "invalid, revoked or missing token")
    gone = json.loads(admin("token", "list", "-o", "json").stdout)
    assert next(t for t in gone if t["id"] == mine["id"])["active"] is False


def test_token_commands_fail_in_one_line_with_the_documented_code(served: Served) -> None:
    admin, team = served.cli("admin"), served.cli("a")
    one_line_error(team("token", "create", "--team", "x"), 4, "only an admin may manage tokens")
    one_line_error(team("token", "list"), 4, "only an admin may manage tokens")
    one_line_error(admin("token", "create", "--team", "x", "--queues", "nope"), 2, "unknown queue 'nope'")
    one_line_error(admin("token", "create", "--team", "bad team"), 2, "token.team")
    one_line_error(admin("token", "create", "--team", "x", "--queues", ","), 2, "--queues")
    one_line_error(admin("token", "create", "--admin", "--team", "x", "--max-gpus", "8"), 2, "no limits")
    one_line_error(admin("token", "create"), 2, "--team")
    one_line_error(admin("token", "revoke", "424242"), 3, "token '424242' not found")
    # an id is never a path: it cannot reach another route
    one_line_error(admin("token", "revoke", "../jobs"), 3, "DELETE /v1/tokens/../jobs")
