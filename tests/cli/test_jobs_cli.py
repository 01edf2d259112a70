"""The job commands through the real CLI (a subprocess) against a real uvicorn server."""

from __future__ import annotations

import json
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from scheduler.cli.context import Context, load_context, save_context
from scheduler.cli.spec_input import gang_shape, parse_duration
from scheduler.model.job import JobState
from tests.api.harness import Cli, Served, free_port, one_line_error, until


class Env:
    def __init__(self, tmp: Path, served: Served) -> None:
        self.tmp, self.served, self.server, self.h = tmp, served, served.server, served.h
        self.store = served.h.store
        self.log_dir = served.h.log_dir
        self.cli = served.cli("a")
        self.cli_b = served.cli("b")

    def count(self) -> int:
        return len(self.store.jobs())

    def many(self, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
        """Run CLI commands side by side (each is a fresh interpreter)."""
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda args: self.cli(*args), commands))

    def job_file(self, text: str, name: str = "job.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with Served(tmp_path) as served:
        yield Env(tmp_path, served)


def test_submit_a_job_file_with_shorthands(env: Env) -> None:
    path = env.job_file("name: train\nqueue: ml-a\ngpus: 16\ntime: 1h30m\ncommand: python train.py\n")
    run = env.cli("submit", path)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    assert job_id.isdecimal() and run.stderr.strip() == f"submitted job {job_id} to queue ml-a"
    record = env.store.get(job_id)
    assert record is not None and record.team == "ml-a"
    spec = record.job.spec
    assert (spec.nodes, spec.gpus_per_node, spec.time_limit_s) == (2, 8, 5400)
    assert spec.command == ["/bin/sh", "-c", "python train.py"]


def test_submit_a_command_with_flags_that_override_the_file(env: Env) -> None:
    path = env.job_file("name: from-file\nqueue: default\ngpus_per_node: 1\n")
    run = env.cli(
        "submit", path, "--queue", "ml-a", "--nodes", "2", "--gpus-per-node", "4", "--gpu-type", "H100",
        "--region", "eu-west", "--priority", "high", "--time", "00:30:00", "--grace", "12",
        "--checkpoint-dir", "/ckpt", "--env", "A=1", "-q", "--", "python", "-u", "train.py", "--lr", "3e-4",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr == "" and run.stdout.strip().isdecimal()
    record = env.store.get(run.stdout.strip())
    assert record is not None
    s = record.job.spec
    assert (s.name, s.queue, s.nodes, s.gpus_per_node, s.gpu_type, s.data_region) == (
        "from-file", "ml-a", 2, 4, "H100", "eu-west",
    )  # fmt: skip
    assert (s.priority, s.time_limit_s, s.grace_period_s, s.checkpoint_dir) == ("high", 1800, 12, "/ckpt")
    assert s.command == ["python", "-u", "train.py", "--lr", "3e-4"] and s.env == {"A": "1"}


def test_jobs_describe_and_output_formats(env: Env) -> None:
    first, second = env.many(
        [
            "submit",
            "--queue",
            "ml-a",
            "--gpus",
            "2",
            "--name",
            "alpha",
            "--idempotency-key",
            "1",
            "-q",
            "--",
            "true",
        ],
        [
            "submit",
            "--queue",
            "ml-a",
            "--gpus",
            "1",
            "--name",
            "beta",
            "--idempotency-key",
            "2",
            "-q",
            "--",
            "true",
        ],
    )
    a, b = sorted([first.stdout.strip(), second.stdout.strip()], key=int)
    name_a = "alpha" if env.store.get(a).job.spec.name == "alpha" else "beta"  # type: ignore[union-attr]
    running = env.h.start(a)
    node_a = running.allocation.nodes[0].node  # type: ignore[union-attr]
    env.h.wait_for(b, [JobState.STARTING])  # placed by the controller too (and left STARTING)
    table, as_json, as_yaml = env.many(
        ["jobs"], ["jobs", "-o", "json"], ["jobs", "-o", "yaml", "--state", "starting"]
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "QUEUE", "STATE", "GPUS", "NODES", "TIME", "REASON"]
    row_a = next(line.split() for line in lines if line.split()[0] == a)
    assert row_a[1:4] == [name_a, "ml-a", "RUNNING"] and row_a[5] == "1" and row_a[7] == node_a
    assert row_a[6].count(":") == 2
    assert [j["id"] for j in json.loads(as_json.stdout)] == [a, b]
    assert [j["id"] for j in yaml.safe_load(as_yaml.stdout)] == [b]

    env.h.finish(a)
    unfinished, every, described, human, as_yaml, history = env.many(
        ["jobs", "-o", "json"],
        ["jobs", "--all", "-o", "json"],
        ["describe", b, "-o", "json"],
        ["describe", a],
        ["describe", a, "-o", "yaml"],
        ["history"],
    )
    assert [j["id"] for j in json.loads(unfinished.stdout)] == [b]
    assert len(json.loads(every.stdout)) == 2
    out = json.loads(described.stdout)
    assert {
        "id",
        "state",
        "queue",
        "pending_reason",
        "allocation",
        "history",
        "audit",
        "queue_position",
    } <= set(out)
    assert out["state"] == "STARTING" and out["allocation"]
    assert human.returncode == 0, human.stderr
    for fragment in [name_a, "SUCCEEDED", "History", "SUBMITTED", "Audit"]:
        assert fragment in human.stdout
    assert yaml.safe_load(as_yaml.stdout)["id"] == a
    rows = history.stdout.splitlines()
    assert history.returncode == 0 and len(rows) == 2  # the header and the one finished job
    assert rows[1].split()[:4] == [a, name_a, "ml-a", "SUCCEEDED"]


def test_cancel_and_logs(env: Env) -> None:
    job = env.cli("submit", "--queue", "ml-a", "-q", "--", "true").stdout.strip()
    env.h.start(job)
    (env.log_dir / f"{job}.log").write_text("hello\nworld\n")
    logs = env.cli("logs", job)
    assert logs.returncode == 0 and logs.stdout == "hello\nworld\n"
    cancelled = env.cli("cancel", job, "--grace", "3")
    assert cancelled.returncode == 0 and f"cancel requested for job {job}" in cancelled.stderr
    record = env.store.get(job)
    assert record is not None and record.cancel_requested_at is not None and record.cancel_grace_s == 3
    until(lambda: bool(env.h.backend.stops_of(job)), "the stop")
    env.h.exit(job, 143)
    env.h.wait_for(job, [JobState.CANCELLED])
    one_line_error(env.cli("cancel", job), 2, "already finished")


def _finish_newest_when_submitted(
    env: Env, state: JobState, lines: list[str] | None = None
) -> threading.Thread:
    before = env.count()

    def worker() -> None:
        deadline = time.monotonic() + 20
        while env.count() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        job = env.store.jobs(newest_first=True, limit=1)[0]
        env.h.start(job.id)
        for line in lines or []:
            with (env.log_dir / f"{job.id}.log").open("a") as f:
                f.write(line)
            time.sleep(0.2)
        env.h.finish(job.id, state, 0 if state is JobState.SUCCEEDED else 3)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    return thread


def test_wait_exits_0_on_success_and_1_on_failure(env: Env) -> None:
    thread = _finish_newest_when_submitted(env, JobState.SUCCEEDED)
    ok = env.cli("submit", "--queue", "ml-a", "--wait", "--", "true")
    thread.join()
    assert ok.returncode == 0, ok.stderr
    assert "SUCCEEDED (exit 0)" in ok.stderr
    thread = _finish_newest_when_submitted(env, JobState.FAILED)
    failed = env.cli("submit", "--queue", "ml-a", "--wait", "--", "false")
    thread.join()
    assert failed.returncode == 1 and "FAILED (exit 3)" in failed.stderr


def test_follow_streams_the_log_then_exits_like_wait(env: Env) -> None:
    thread = _finish_newest_when_submitted(env, JobState.SUCCEEDED, ["one\n", "two\n", "three\n"])
    run = env.cli("submit", "--queue", "ml-a", "--follow", "-q", "--", "echo")
    thread.join()
    assert run.returncode == 0, run.stderr
    out = run.stdout.splitlines()
    assert out[0].isdecimal() and out[1:] == ["one", "two", "three"]


def test_dry_run_shows_where_it_would_go_and_stores_nothing(env: Env) -> None:
    run = env.cli(
        "submit", "--queue", "ml-a", "--gpus", "16", "--gpu-type", "H100", "--region", "eu-west", "--dry-run"
    )
    assert run.returncode == 0, run.stderr
    assert "would start now on eu-west-r1-n00" in run.stdout and "eu-west-r1-n01" in run.stdout
    assert env.count() == 0


def test_bad_input_is_one_line_with_the_documented_exit_code(env: Env) -> None:
    broken = env.job_file("name: x\nqueue: ml-a\ncommand: [a, b\ngpus: 2\n", "broken.yaml")
    typo = env.job_file("name: x\nqueue: ml-a\ngpus_per_nod: 2\n", "typo.yaml")
    too_wide = env.job_file("name: x\ngpus_per_node: 100000\n", "wide.yaml")
    huge = env.job_file(
        "name: x\nenv:\n" + "".join(f"  V{i}: {'x' * 100}\n" for i in range(1000)), "huge.yaml"
    )
    cases: list[tuple[list[str | Path], int, tuple[str, ...]]] = [
        (["submit", broken], 2, ("broken.yaml:4:", "YAML")),
        (["submit", typo, "--", "true"], 2, ("typo.yaml:3: gpus_per_nod", "unknown field")),
        (["submit", too_wide, "--", "true"], 2, ("wide.yaml:2: gpus_per_node", "≤ 64")),
        (["submit", "--queue", "nope", "--", "true"], 2, ("queue", "unknown queue 'nope'")),
        (["submit", "--gpus", "0", "--", "true"], 2, ("--gpus", "≥ 1")),
        (["submit", "--gpus", "100000", "--", "true"], 2, ("--gpus", "at most 1024 nodes")),
        (["submit", "--gpus", "12", "--", "true"], 2, ("--gpus", "--nodes")),
        (["submit", "--gpu-type", "V100", "--", "true"], 2, ("gpu_type", "no V100 nodes")),
        (["submit", "--region", "mars", "--", "true"], 2, ("data_region", "mars")),
        (["submit", "--time", "soon", "--", "true"], 2, ("--time",)),
        (["submit", huge, "--", "true"], 2, ("64 KiB",)),
        (["submit", env.tmp / "missing.yaml"], 2, ("missing.yaml", "no such job file")),
        (["submit", "--bogus"], 2, ("--bogus",)),
        (["jobs", "-o", "xml"], 2, ("--output",)),
        (["describe", "424242"], 3, ("job 424242 not found",)),
        (["logs", "424242"], 3, ("not found",)),
    ]
    runs = env.many(*[[str(arg) for arg in case[0]] for case in cases])
    for (_, code, fragments), run in zip(cases, runs, strict=True):
        one_line_error(run, code, *fragments)
    assert env.count() == 0


def test_permission_and_reachability_exit_codes(env: Env) -> None:
    job = env.cli("submit", "--queue", "ml-a", "-q", "--", "true").stdout.strip()
    one_line_error(env.cli_b("describe", job), 3, f"job {job} not found")  # another team's job
    one_line_error(env.cli_b("cancel", job), 3, "not found")
    one_line_error(env.cli("jobs", env={"CORRAL_TOKEN": "wrong"}), 4, "invalid, revoked or missing token")
    closed = f"http://127.0.0.1:{free_port()}"
    one_line_error(
        env.cli("jobs", env={"CORRAL_API_URL": closed}), 5, f"cannot reach the Corral API at {closed}"
    )
    one_line_error(env.cli("submit", "-q", "--", "true", env={"CORRAL_API_URL": closed}), 5, "corral up")
    assert env.count() == 1


def test_the_context_file_is_used_and_private(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(env.tmp / "ctx"))
    monkeypatch.delenv("CORRAL_API_URL", raising=False)
    monkeypatch.delenv("CORRAL_TOKEN", raising=False)
    token_b = env.h.secrets["b"]
    path = save_context(Context(api_url=env.server.url, token=token_b))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_context() == Context(api_url=env.server.url, token=token_b)
    assert load_context().token_source.endswith("context.yaml: token")
    assert [p.name for p in path.parent.iterdir()] == ["context.yaml"]  # no temporary file left
    cli = Cli(env.tmp / "ctx", env.server.url, None)
    del cli.env["CORRAL_API_URL"]
    run = cli("submit", "--queue", "ml-b", "-q", "--", "true")
    assert run.returncode == 0, run.stderr
    record = env.store.get(run.stdout.strip())
    assert record is not None and record.team == "ml-b"
    path.write_text("api_url: [\n")
    one_line_error(cli("jobs"), 2, "context.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("01:02:03", 3723),
     ("05:00", 300), ("2.5", 2.5)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1x", "1:2:3:4", "h", "inf", "1h junk"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("gpus", "nodes", "width", "shape"),
    [(1, None, None, (1, 1)), (8, None, None, (1, 8)), (16, None, None, (2, 8)), (64, None, None, (8, 8)),
     (16, 4, None, (4, 4)), (16, None, 4, (4, 4)), (4, None, 8, (1, 4))],
)  # fmt: skip
def test_gpus_shorthand(gpus: int, nodes: int | None, width: int | None, shape: tuple[int, int]) -> None:
    assert gang_shape(gpus, nodes, width, "--gpus") == shape


def test_gpus_shorthand_refuses_what_does_not_split(capsys: pytest.CaptureFixture[str]) -> None:
    for gpus, nodes in [(0, None), (12, None), (10, 4), (100_000, None)]:
        with pytest.raises(SystemExit) as exc:
            gang_shape(gpus, nodes, None, "--gpus")
        assert exc.value.code == 2
    assert all(line.startswith("error: --gpus: ") for line in capsys.readouterr().err.splitlines())
