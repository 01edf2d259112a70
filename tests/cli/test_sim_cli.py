"""`corral sim` through the real CLI, as a user runs it (a subprocess)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "examples" / "cluster.yaml"
DEMO = ROOT / "examples" / "traces" / "demo.csv"


def corral(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_json_compares_every_policy_against_the_bounds(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    plot = tmp_path / "runs.png"
    run = corral(
        "sim", "--cluster", CLUSTER, "--trace", DEMO, "--policy", "fifo,sjf,las,corral",
        "--output", "json", "--events-out", events, "--plot", plot,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert set(out["policies"]) == {"fifo", "sjf", "las", "corral"}
    keys = {"avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_wait_s", "p99_wait_s", "makespan_s"}
    keys |= {"gpu_allocation_rate", "preemptions", "jobs"}
    for name, summary in out["policies"].items():
        assert keys <= set(summary), name
        assert 0.0 < summary["gpu_allocation_rate"] <= 1.0
        # No schedule beats the lower bounds.
        assert summary["avg_jct_s"] >= out["bounds"]["avg_jct_s"] * (1 - 1e-9)
        assert summary["makespan_s"] >= out["bounds"]["makespan_s"] * (1 - 1e-9)
        assert summary["jobs"] + summary["rejected"] == 200
    assert plot.stat().st_size > 10_000

    # Every span is a real stretch on GPUs inside the job's data region; they never overlap.
    spans = [json.loads(line) for line in events.read_text().splitlines()]
    assert {s["policy"] for s in spans} == {"fifo", "sjf", "las", "corral"}
    regions = {row["job_id"]: row["data_region"] for row in _demo_rows()}
    for policy in ("fifo", "corral"):
        held: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for s in (s for s in spans if s["policy"] == policy):
            assert s["end"] >= s["start"]
            assert s["end_reason"] in {"completed", "preempted", "node_failure", "timeout"}
            for a in s["allocation"]:
                if regions[s["job_id"]] not in ("", "any"):
                    assert a["region"] == regions[s["job_id"]]
                for gpu in a["gpus"]:
                    held.setdefault((a["node"], gpu), []).append((s["start"], s["end"]))
        for stretches in held.values():
            stretches.sort()
            for (_, end), (start, _) in itertools.pairwise(stretches):
                assert start >= end


def _demo_rows() -> list[dict[str, str]]:
    import csv

    with DEMO.open() as f:
        return list(csv.DictReader(f))


def test_table_output_names_every_policy() -> None:
    run = corral("sim", "-c", CLUSTER, "-t", DEMO, "-p", "fifo,corral", "--limit", "40")
    assert run.returncode == 0, run.stderr
    assert "fifo" in run.stdout and "corral" in run.stdout and "lower bound" in run.stdout


def test_gpu_count_placement_says_so() -> None:
    run = corral("sim", "-c", CLUSTER, "-t", DEMO, "-p", "las", "--limit", "40", "--placement", "gpu-count")
    assert run.returncode == 0, run.stderr
    assert "GPUs counted without node boundaries" in run.stdout and "256 GPUs" in run.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--policy", "best"], "--policy: unknown policy best"),
        (["--output", "xml"], "--output: must be table or json"),
        (["--format", "swf"], "--format: unknown format"),
        (["--placement", "spread"], "--placement: must be nodes or gpu-count"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    run = corral("sim", "-c", CLUSTER, "-t", DEMO, *args)
    assert run.returncode == 2
    assert fragment in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("scan_depth: [1\n", "p.yaml:2: not valid YAML (expected ',' or ']'"),
        ("policy:\n  scan_dept: 3\n", "p.yaml: scan_dept: unknown policy knob; the knobs are name,"),
        ("policy: 5\n", "p.yaml: the policy config must be a mapping of knob: value"),
        ("scan_depth: 0\n", "p.yaml: scan_depth: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_policy_config_gets_one_line_and_exit_2(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "p.yaml"
    config.write_text(text)
    run = corral("sim", "-c", CLUSTER, "-t", DEMO, "--limit", "5", "--policy-config", config)
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert "--policy-config: " in run.stderr and fragment in run.stderr, run.stderr


@pytest.mark.parametrize(
    ("option", "where", "fragment"),
    [
        ("--plot", "file.txt/runs.png", "file.txt is not a directory; create it or choose another path"),
        ("--events-out", "missing/e.jsonl", "missing is not a directory"),
        ("--events-out", ".", "is a directory; give a file name"),
        ("--metrics-out", "file.txt/m.om", "file.txt is not a directory"),
    ],
)
def test_an_unwritable_output_gets_one_line_before_any_simulation(
    tmp_path: Path, option: str, where: str, fragment: str
) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    run = corral("sim", "-c", CLUSTER, "-t", DEMO, option, tmp_path / where)
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert f"{option}: " in run.stderr and fragment in run.stderr, run.stderr
    assert run.stdout == ""  # refused before replaying anything


def test_a_bad_trace_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("job_id,submit_time,duration,gpus\na,0,10,1\nb,5,ten,1\n")
    run = corral("sim", "-c", CLUSTER, "-t", bad)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "bad.csv:3" in lines[0] and "duration" in lines[0]


def test_a_bad_cluster_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("regions:\n  - name: r\n    racks:\n      - {name: a, nodes: 0, gpu_type: H100}\n")
    run = corral("sim", "-c", bad, "-t", DEMO)
    assert run.returncode == 2
    assert "c.yaml:4" in run.stderr and "nodes" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    run = corral("sim", "-c", CLUSTER, "-t", tmp_path / "nope.csv")
    assert run.returncode == 2
    assert "nope.csv" in run.stderr and "Traceback" not in run.stderr


def test_schema_is_the_job_spec_json_schema() -> None:
    run = corral("schema")
    assert run.returncode == 0
    schema = json.loads(run.stdout)
    assert {"queue", "nodes", "gpus_per_node", "data_region"} <= set(schema["properties"])
