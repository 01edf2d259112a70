"""The CLI's failures: one line, the documented exit code (scheduler/cli/client.py), 429 retried,
nothing a user wrote sent raw to the terminal."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from scheduler.api.app import ApiSettings
from scheduler.model.job import JobState
from tests.api.harness import ROOT, Served, free_port, one_line_error, until


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        yield s


def test_each_status_has_its_exit_code(served: Served) -> None:
    a, b = served.cli("a"), served.cli("b")
    job = a("submit", "--queue", "ml-a", "-q", "--", "true").stdout.strip()
    served.h.finish(job)
    huge = served.tmp / "huge.yaml"
    huge.write_text(
        "name: x\ncommand: [true]\nenv:\n" + "".join(f"  V{i}: {'x' * 100}\n" for i in range(1000))
    )
    cases = [
        (b, ["describe", job], 3, f"job {job} not found"),  # 404 (another team's job)
        (b, ["describe", "9999999999999999999"], 3, "not found"),
        (b, ["describe", "--", "-1"], 3, "job -1 not found"),
        (b, ["cancel", "abc"], 3, "job abc not found"),
        (a, ["describe", "../tokens"], 3, "no such route GET /v1/jobs/../tokens"),  # never another route
        (a, ["jobs", "--queue", "ml-a", "--state", "sleeping"], 2, "unknown state"),  # 422
        (a, ["submit", "--queue", "nope", "--", "true"], 2, "unknown queue 'nope'"),  # 400
        (a, ["cancel", job], 2, "already finished"),  # 409
        (a, ["submit", huge], 2, "64 KiB"),  # 413
        (served.cli("vision"), ["submit", "--queue", "ml-a", "--", "true"], 4, "may not submit"),  # 403
        (served.cli("revoked"), ["jobs"], 4, "invalid, revoked or missing token"),  # 401
    ]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda c: c[0](*c[1]), cases))
    for (_, _, code, fragment), run in zip(cases, runs, strict=True):
        one_line_error(run, code, fragment)
    # 007 is job 7
    padded = a("describe", job.zfill(3), "-o", "json")
    assert padded.returncode == 0 and json.loads(padded.stdout)["id"] == job


def test_a_server_error_is_1_and_only_unreachable_is_5(served: Served) -> None:
    a = served.cli("a")

    def boom() -> None:
        raise RuntimeError("secret internals")

    served.h.controller.view = boom  # type: ignore[assignment,method-assign]
    one_line_error(a("queues"), 1, "the Corral API failed: internal error: see the controller log")
    closed = f"http://127.0.0.1:{free_port()}"
    one_line_error(a("jobs", env={"CORRAL_API_URL": closed}), 5, f"cannot reach the Corral API at {closed}")
    one_line_error(a("jobs", env={"CORRAL_API_URL": "http://no-such-host.invalid:1"}), 5, "ConnectError")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        one_line_error(a("jobs", env={"CORRAL_API_URL": url, "CORRAL_TIMEOUT_S": "1"}), 5, "ReadTimeout")
    one_line_error(a("jobs", env={"CORRAL_API_URL": "not a url"}), 2, "CORRAL_API_URL")
    one_line_error(a("jobs", env={"CORRAL_RETRIES": "many"}), 2, "CORRAL_RETRIES")


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("abc\ndef", "a line break"),
        ("abc def", "a space"),
        ("abc\x1bdef", "a control character"),
        ("äbc", "non-ASCII"),
    ],
)
def test_a_token_that_cannot_be_sent_is_4_without_contacting_the_server(
    served: Served, token: str, problem: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # contacting it would be exit 5
    run = served.cli(None)("jobs", env={"CORRAL_API_URL": closed, "CORRAL_TOKEN": token})
    one_line_error(run, 4, "CORRAL_TOKEN: the token holds", problem)
    assert "\x1b" not in run.stderr


def test_what_users_wrote_is_escaped_in_tables(served: Served) -> None:
    admin = served.cli("admin")
    made = admin(
        "token", "create", "--team", "ml-a", "--description", "\x1b[2J\x1b[31mred[/] [bold]x[/bold]\nfake"
    )
    assert made.returncode == 0, made.stderr
    listed = admin("token", "list")
    assert listed.returncode == 0 and "\x1b" not in listed.stdout
    assert "\\x1b[2J\\x1b[31mred[/] [bold]x[/bold]\\nfake" in listed.stdout  # shown, not interpreted

    a = served.cli("a")
    job = a(
        "submit", "--queue", "ml-a", "-q", "--", "echo", "\x1b]0;owned\x07", "[red]hi[/red]", "\u202eevil"
    )
    assert job.returncode == 0, job.stderr
    described = a("describe", job.stdout.strip())
    assert described.returncode == 0, described.stderr
    out = described.stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b]0;owned\\x07 [red]hi[/red] \\u202eevil" in out
    raw = a("describe", job.stdout.strip(), "-o", "json")  # data formats carry the data as it is
    assert json.loads(raw.stdout)["spec"]["command"][1] == "\x1b]0;owned\x07"


def test_429_is_retried_after_retry_after_then_5(tmp_path: Path) -> None:
    settings = ApiSettings(max_followers=1, rate_per_s=0.2, burst=5, log_poll_s=0.05)
    with Served(tmp_path, settings) as served:
        h = served.h
        with httpx.Client(base_url=served.server.url, timeout=30) as http:
            # too many requests: b's bucket is empty and refills slowly
            for _ in range(5):
                http.get("/v1/whoami", headers=h.auth("b"))
            one_line_error(
                served.cli("b")("queues", env={"CORRAL_RETRIES": "0"}),
                5,
                "too many requests",
                "(gave up after 0 retries)",
            )
            # too many followers: a's one slot is taken; the CLI waits for Retry-After and gets in
            job = http.post(
                "/v1/jobs",
                json={"name": "j", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]},
                headers=h.auth("a"),
            ).json()["id"]
            h.start(job)
            (h.log_dir / f"{job}.log").write_text("one\ntwo\n")
            url = f"/v1/jobs/{job}/logs"
            with http.stream("GET", url, params={"follow": "true"}, headers=h.auth("a")) as held:
                assert held.status_code == 200
                one_line_error(
                    served.cli("a")("logs", "-f", job, env={"CORRAL_RETRIES": "0"}),
                    5,
                    "already follows 1 logs",
                )
                cli = served.cli("a")
                follower = subprocess.Popen(
                    [sys.executable, "-m", "scheduler.cli", "logs", "-f", job],
                    cwd=ROOT,
                    env={**cli.env, "CORRAL_RETRIES": "3"},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                assert follower.stderr is not None
                retry = follower.stderr.readline()  # refused while the slot is held: it waits
                assert "already follows 1 logs" in retry and "retrying in 5 s" in retry, retry
            record = h.tokens.by_token(h.secrets["a"])
            assert record is not None
            until(
                lambda: h.app.state.deps.followers.active(record.id) == 1, "the CLI to follow after its retry"
            )
            h.exit(job, 0)  # the job ends while the CLI follows it
            out, err = follower.communicate(timeout=60)
            assert follower.returncode == 0, err
            assert out == "one\ntwo\n" and err == ""
            h.wait_for(job, [JobState.SUCCEEDED])
