"""`corral submit` refuses hostile or broken job specs on the client, before any request: one line
naming where the problem is and the fix, exit 2, no traceback, nothing sent.

The CLI runs as a subprocess against an API address where nothing listens: a case that reached the
network would exit 5 (unreachable) instead of 2, so each case also proves nothing was sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BOMB = "\n".join(
    [
        "name: bomb",
        "a: &a [x, x, x, x, x, x, x, x, x]",
        *(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefg", "bcdefgh", strict=True)),
        "command: [*h, *h, *h, *h, *h, *h, *h, *h, *h]",
    ]
)

CASES: list[tuple[str, str | None, list[str], tuple[str, ...]]] = [
    # (id, job file text or None, extra args, fragments of the one-line error)
    ("alias bomb", BOMB, [], ("job.yaml:", "expands to more than")),
    ("deep nesting", "command: " + "[" * 5000 + "]" * 5000, [], ("job.yaml:", "nested more than 32")),
    ("duplicate key", "name: a\ncommand: [echo]\nname: b\n", [], ("job.yaml:3:", "duplicate key 'name'")),
    ("unknown field", "name: a\ncommand: [echo]\ngpu: 2\n", [], ("job.yaml:3: gpu", "unknown field")),
    ("count as bool", "command: [echo]\ngpus_per_node: true\n", [], ("gpus_per_node", "whole number")),
    ("count as string", "command: [echo]\nnodes: '2'\n", [], ("nodes", "whole number")),
    ("infinite protection", "command: [echo]\nmin_runtime_s: .inf\n", [], ("min_runtime_s", "finite")),
    ("NaN time limit", "command: [echo]\ntime_limit_s: .nan\n", [], ("time_limit_s", "finite")),
    ("empty command", "name: a\ncommand: []\n", [], ("command", "must not be empty")),
    ("blank command", "name: a\ncommand: '   '\n", [], ("command", "must not be empty")),
    (
        "reserved env in file",
        "command: [echo]\nenv: {RANK: '0'}\n",
        [],
        ("env", "RANK is set by the scheduler"),
    ),
    ("relative working dir", "command: [echo]\nworking_dir: ../../etc\n", [], ("working_dir", "absolute")),
    (
        "dotdot checkpoint dir",
        "command: [echo]\ncheckpoint_dir: /tmp/../etc\n",
        [],
        ("checkpoint_dir", "'..'"),
    ),
    (
        "terminal escapes in name",
        'command: [echo]\nname: "inf\\e]0;PWNED\\a"\n',
        [],
        ("name", "letters, digits"),
    ),
    ("newline in name", 'command: [echo]\nname: "a\\nb"\n', [], ("name", "letters, digits")),
    ("not a mapping", "- a\n- b\n", [], ("job.yaml:1", "mapping")),
    (
        "reserved env flag",
        None,
        ["-e", "CUDA_VISIBLE_DEVICES=0,1,2,3", "--", "true"],
        ("CUDA_VISIBLE_DEVICES",),
    ),
    ("CORRAL_ env flag", None, ["-e", "CORRAL_JOB_ID=1", "--", "true"], ("CORRAL_JOB_ID",)),
    ("bad env name", None, ["-e", "1X=2", "--", "true"], ("env", "not a variable name")),
    ("huge time", None, ["--time", "9" * 400, "--", "true"], ("--time", "not a duration")),
    ("zero GPUs", None, ["--gpus", "0", "--", "true"], ("--gpus", "≥ 1")),
    ("no command", None, ["--gpus", "1"], ("command", "must not be empty")),
]


def _run(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update({"CORRAL_HOME": str(tmp_path), "CORRAL_API_URL": "http://127.0.0.1:9", "CORRAL_TOKEN": "t"})
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "submit", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def _one_line(run: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr and run.stdout == "", run.stderr
    assert len(lines[0]) < 400, lines[0]  # never echoes a huge value back
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize(("text", "args", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_spec_is_one_line_and_exit_2_before_anything_is_sent(
    tmp_path: Path, text: str | None, args: list[str], fragments: tuple[str, ...]
) -> None:
    files: list[str] = []
    if text is not None:
        path = tmp_path / "job.yaml"
        path.write_text(text, encoding="utf-8")
        files = [str(path)]
    _one_line(_run(tmp_path, [*files, *args]), *fragments)


def test_an_endless_job_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    t0 = time.monotonic()
    _one_line(_run(tmp_path, ["/dev/zero", "--", "true"]), "/dev/zero", "larger than 64 KiB")
    assert time.monotonic() - t0 < 30


def test_a_job_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    _one_line(_run(tmp_path, [str(path)]), "job.yaml", "not UTF-8")


def test_the_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(BOMB, encoding="utf-8")
    t0 = time.monotonic()
    _one_line(_run(tmp_path, [str(path)]), "expands to more than")
    assert time.monotonic() - t0 < 30  # was 54 s and 2.2 GB, then a MemoryError traceback
