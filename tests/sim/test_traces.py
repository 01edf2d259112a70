"""Trace loaders: golden files for every format, detection, .gz, and one-line errors."""

from __future__ import annotations

import csv
import gzip
import math
import shutil
from pathlib import Path

import pytest

from scheduler.model.cluster import ANY
from scheduler.sim.records import TraceJob
from scheduler.sim.traces import (
    FORMATS,
    GAVEL_V100_STEPS_PER_S,
    Trace,
    TraceError,
    detect_format,
    gavel_steps_per_second,
    load_trace,
    split_gpus,
)

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "traces"


def _shape(job: TraceJob) -> tuple[str, float, float, int, int, str]:
    s = job.spec
    return (job.job_id, job.submit_time, job.duration, s.nodes, s.gpus_per_node, s.queue)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


CORRAL_HEADER = "job_id,submit_time,duration,gpus"


# --- golden files ----------------------------------------------------------------------------------


def test_corral_golden() -> None:
    trace = load_trace(GOLDEN / "corral_small.csv")
    assert trace.fmt == "corral"
    assert trace.source.endswith("corral_small.csv")
    assert trace.queues == ("default", "perception", "planning", "research")
    assert trace.dropped == 0
    assert [_shape(j) for j in trace.jobs] == [
        ("c-1", 0.0, 3600.5, 1, 1, "default"),
        ("c-2", 0.0, 120.0, 2, 6, "planning"),  # 12 GPUs → 2 nodes × 6
        ("c-3", 50.0, 600.0, 2, 8, "perception"),  # 16 GPUs → 2 nodes × 8
        ("c-4", 300.0, 60.0, 2, 4, "research"),  # nodes/gpus_per_node given
    ]
    c1, c2, c3, c4 = (j.spec for j in trace.jobs)
    assert (c1.priority, c1.gpu_type, c1.data_region, c1.time_limit_s, c1.preemptible) == (
        "normal",
        ANY,
        ANY,
        None,
        True,
    )
    assert (c2.priority, c2.gpu_type, c2.data_region, c2.time_limit_s, c2.preemptible) == (
        "low",
        ANY,
        "eu-west",
        None,
        True,
    )
    assert (c3.priority, c3.gpu_type, c3.data_region, c3.time_limit_s, c3.preemptible) == (
        "high",
        "H100",
        "cn-north",
        1800.0,
        False,
    )
    assert (c4.priority, c4.gpu_type, c4.data_region, c4.time_limit_s, c4.preemptible) == (
        "normal",
        "A100",
        ANY,
        90.0,
        True,
    )


def test_philly_golden_drops_and_counts() -> None:
    trace = load_trace(GOLDEN / "philly_small.csv")
    assert trace.fmt == "philly"
    # row 2 has duration 0 and row 4 asks for 9 GPUs (no even split over 8-GPU nodes): dropped, counted
    assert trace.dropped == 2
    assert trace.drop_reasons == (("8-GPU-node split uneven", 1), ("duration ≤ 0", 1))
    assert [_shape(j) for j in trace.jobs] == [
        ("philly-1", 0.0, 2951.0, 2, 8, "6214e9"),
        ("philly-0", 2932.0, 66.0, 1, 1, "11cb48"),  # 07:01:55 - 06:13:03
        ("philly-3", 86400.0, 100.0, 2, 6, "b436b2"),
    ]
    assert trace.queues == ("11cb48", "6214e9", "b436b2")
    assert all(j.spec.priority == "normal" and j.spec.gpu_type == ANY for j in trace.jobs)


def test_tiresias_golden() -> None:
    trace = load_trace(GOLDEN / "tiresias_small.csv")
    assert trace.fmt == "tiresias"
    assert [_shape(j) for j in trace.jobs] == [
        ("0", 0.0, 164.0, 1, 1, "default"),
        ("1", 30.0, 147.0, 1, 8, "default"),
        ("2", 53.0, 127.0, 1, 2, "default"),
    ]
    assert [j.spec.name for j in trace.jobs] == ["vgg19", "vgg11", "inception4"]


def test_gavel_msr_golden_uses_vc_from_file_name() -> None:
    trace = load_trace(GOLDEN / "msr_seed0_0e4a51.trace")
    assert trace.fmt == "gavel"
    assert trace.queues == ("0e4a51",)
    rate = GAVEL_V100_STEPS_PER_S
    assert [_shape(j) for j in trace.jobs] == [
        ("msr_seed0_0e4a51-0", 0.0, 95121 / rate["Transformer (batch size 128)"], 1, 1, "0e4a51"),
        ("msr_seed0_0e4a51-1", 6.0, 10000 / rate["Recommendation (batch size 8192)"], 1, 1, "0e4a51"),
        ("msr_seed0_0e4a51-2", 6.0, 27788 / rate["Transformer (batch size 256)"], 1, 1, "0e4a51"),
    ]
    assert trace.jobs[0].spec.name == "Transformer (batch size 128)"


def test_gavel_physical_golden() -> None:
    trace = load_trace(GOLDEN / "gavel_physical_small.trace")
    assert trace.fmt == "gavel"
    rate = GAVEL_V100_STEPS_PER_S
    assert [_shape(j) for j in trace.jobs] == [
        ("gavel_physical_small-0", 0.0, 2931 / rate["ResNet-50 (batch size 64)"], 1, 1, "default"),
        ("gavel_physical_small-1", 0.0, 15044 / rate["LM (batch size 40)"], 1, 2, "default"),
    ]


def test_shockwave_golden() -> None:
    trace = load_trace(GOLDEN / "shockwave_small.trace")
    assert trace.fmt == "shockwave"
    assert [_shape(j) for j in trace.jobs] == [
        ("shockwave_small-0", 0.0, 1418.0, 1, 1, "default"),
        ("shockwave_small-1", 55.0, 3338.0, 1, 1, "default"),
        ("shockwave_small-2", 64.0, 13462.0, 1, 1, "default"),
    ]
    assert [j.spec.name for j in trace.jobs] == [
        "LM (batch size 10)",
        "ResNet-18 (batch size 32)",
        "ResNet-50 (batch size 64)",
    ]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("corral_small.csv", "corral"),
        ("philly_small.csv", "philly"),
        ("tiresias_small.csv", "tiresias"),
        ("msr_seed0_0e4a51.trace", "gavel"),
        ("gavel_physical_small.trace", "gavel"),
        ("shockwave_small.trace", "shockwave"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(GOLDEN / name) == fmt
    assert fmt in FORMATS


def test_explicit_fmt_matches_detection() -> None:
    assert load_trace(GOLDEN / "tiresias_small.csv", fmt="tiresias") == load_trace(
        GOLDEN / "tiresias_small.csv"
    )


def test_gz_is_read_transparently(tmp_path: Path) -> None:
    src = GOLDEN / "philly_small.csv"
    gz = tmp_path / "philly_small.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    plain, packed = load_trace(src), load_trace(gz)
    assert packed.jobs == plain.jobs
    assert packed.fmt == "philly" and packed.dropped == plain.dropped


def test_gz_keeps_the_stem_for_job_ids(tmp_path: Path) -> None:
    gz = tmp_path / "shockwave_small.trace.gz"
    gz.write_bytes(gzip.compress((GOLDEN / "shockwave_small.trace").read_bytes()))
    assert load_trace(gz).jobs[0].job_id == "shockwave_small-0"


def test_limit_keeps_the_first_arrivals() -> None:
    trace = load_trace(GOLDEN / "philly_small.csv", limit=2)
    assert [j.job_id for j in trace.jobs] == ["philly-1", "philly-0"]
    assert trace.queues == ("11cb48", "6214e9")


def test_trace_helpers() -> None:
    trace = load_trace(GOLDEN / "tiresias_small.csv")
    assert isinstance(trace, Trace)
    assert len(trace) == 3 and list(trace) == list(trace.jobs)
    assert trace.gpu_seconds == 164 + 147 * 8 + 127 * 2
    assert trace.span == 53.0
    assert trace.average_demand == pytest.approx(trace.gpu_seconds / 53.0)


def test_split_gpus() -> None:
    assert split_gpus(1) == (1, 1)
    assert split_gpus(8) == (1, 8)
    assert split_gpus(12) == (2, 6)
    assert split_gpus(16) == (2, 8)
    assert split_gpus(24) == (3, 8)
    assert split_gpus(128) == (16, 8)
    assert split_gpus(9) is None
    assert split_gpus(20) is None


def test_gavel_throughput_fallback_by_family() -> None:
    table = GAVEL_V100_STEPS_PER_S
    assert gavel_steps_per_second("A3C") == table["A3C"]
    # unknown batch size: nearest known batch size of the same model family
    assert gavel_steps_per_second("ResNet-18 (batch size 512)") == table["ResNet-18 (batch size 256)"]
    assert gavel_steps_per_second("LM (batch size 8)") == table["LM (batch size 10)"]
    family = [v for k, v in table.items() if k.startswith("ResNet-50")]
    geo_mean = math.exp(sum(math.log(v) for v in family) / len(family))
    assert gavel_steps_per_second("ResNet-50") == pytest.approx(geo_mean)
    assert gavel_steps_per_second("GPT-5 (batch size 1)") is None


def test_gavel_unknown_model_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.trace", "Mystery (batch size 4)\tcmd\t--steps\t1\t100\t0.0\t1\n")
    with pytest.raises(TraceError, match=r"x\.trace:1: job_type: unknown model 'Mystery \(batch size 4\)'"):
        load_trace(path)


# --- errors ------------------------------------------------------------------------------------------


def _error(tmp_path: Path, text: str, name: str = "bad.csv") -> str:
    path = _write(tmp_path, name, text)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ":")
    return message[len(str(path)) :]


def test_error_missing_required_column(tmp_path: Path) -> None:
    # detection cannot tell it apart from other formats, so say which columns were expected
    msg = _error(tmp_path, "job_id,submit_time,duration\nj,0,10\n")
    assert msg.startswith(":1: header: cannot tell the trace format")
    assert "job_id,submit_time,duration,gpus" in msg
    path = _write(tmp_path, "bad2.csv", "job_id,submit_time,duration\nj,0,10\n")
    with pytest.raises(TraceError, match=r"bad2\.csv:1: gpus: missing column \(the header needs"):
        load_trace(path, fmt="corral")


def test_error_unknown_column(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER},qeue\nj,0,10,1,a\n")
    assert msg.startswith(
        ":1: qeue: unknown column (columns are job_id,submit_time,duration,gpus and optionally"
    )


def test_error_non_numeric_with_line_number(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER}\na,0,10,1\nb,5,ten,1\n")
    assert msg == ":3: duration: not a number: 'ten' (write a plain number of seconds)"


def test_error_non_integer_gpus(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER}\na,0,10,1.5\n")
    assert msg == ":2: gpus: not a whole number: '1.5' (write an integer)"


def test_error_negative_duration(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER}\na,0,10,1\n\nb,5,-3,1\n")
    assert msg == ":4: duration: must be > 0 seconds (got -3) (give the job's runtime)"


def test_error_uneven_gpu_split(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER}\na,0,10,9\n")
    assert msg == ":2: gpus: 9 GPUs do not split evenly over 2 nodes of 8 (give nodes and gpus_per_node)"


def test_uneven_split_is_fine_with_explicit_shape(tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.csv", f"{CORRAL_HEADER},nodes,gpus_per_node\na,0,10,9,3,3\nb,0,10,10,,5\n")
    assert [(j.spec.nodes, j.spec.gpus_per_node) for j in load_trace(path).jobs] == [(3, 3), (2, 5)]


def test_error_shape_disagrees_with_gpus(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER},nodes,gpus_per_node\na,0,10,16,3,8\n")
    assert msg == ":2: gpus: 16 GPUs ≠ nodes × gpus_per_node = 3×8 (make gpus = nodes × gpus_per_node)"


def test_error_duplicate_job_id(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER}\na,0,10,1\na,1,10,1\n")
    assert msg == ":3: job_id: 'a' also on line 2 (make job ids unique)"


def test_error_bad_boolean_and_time_limit(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER},preemptible\na,0,10,1,maybe\n")
    assert msg == ":2: preemptible: not a boolean: 'maybe' (write true or false)"
    msg = _error(tmp_path, f"{CORRAL_HEADER},time_limit\na,0,10,1,0\n", "bad3.csv")
    assert msg == ":2: time_limit: must be > 0 seconds (got 0) (leave it empty for none)"


def test_error_wrong_field_count(tmp_path: Path) -> None:
    msg = _error(tmp_path, f"{CORRAL_HEADER}\na,0,10\n")
    assert msg == ":2: row: has 3 fields, the header has 4 (one value per column)"


def test_error_philly_bad_timestamp(tmp_path: Path) -> None:
    text = "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,1,1,1,a\nyesterday,1,1,1,a\n"
    msg = _error(tmp_path, text)
    assert msg == ":3: timestamp: not a date-time: 'yesterday' (write YYYY-mm-dd HH:MM:SS)"


def test_error_empty_and_unknown(tmp_path: Path) -> None:
    assert _error(tmp_path, "") == ":1: file: the trace is empty (give a header line and job rows)"
    assert _error(tmp_path, "a,b,c\n1,2,3\n", "abc.csv").startswith(
        ":1: header: cannot tell the trace format"
    )
    assert _error(tmp_path, f"{CORRAL_HEADER}\n", "nojobs.csv").startswith(":1: jobs: the trace has no jobs")
    with pytest.raises(TraceError, match=r":0: fmt: unknown trace format 'slurm'"):
        load_trace(GOLDEN / "corral_small.csv", fmt="slurm")
    with pytest.raises(TraceError, match=r"missing\.csv:0: file: cannot read"):
        load_trace(tmp_path / "missing.csv")


def test_error_tsv_field_count(tmp_path: Path) -> None:
    msg = _error(tmp_path, "a\tb\tc\n", "three.trace")
    assert msg.startswith(":1: format: a tab-separated line with 3 fields is no known trace")


# --- example data -------------------------------------------------------------------------------------


def test_full_philly_example_matches_an_independent_count() -> None:
    path = EXAMPLES / "philly_jobs.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected_gpu_s = math.fsum(float(r["gpu_time"]) for r in rows)
    trace = load_trace(path)
    assert len(trace) == len(rows) == 82_247
    assert trace.dropped == 0
    assert trace.gpu_seconds == pytest.approx(expected_gpu_s, rel=1e-12)
    assert len(trace.queues) == len({r["cluster"] for r in rows}) == 15
    assert trace.jobs[0].submit_time == 0.0
    assert all(a.submit_time <= b.submit_time for a, b in zip(trace.jobs, trace.jobs[1:], strict=False))


def test_examples_load() -> None:
    expected = {
        "demo.csv": ("corral", 200),
        "philly_sample.csv": ("philly", 2000),
        "tiresias_60_job.csv": ("tiresias", 60),
        "shockwave_tacc32_120jobs.trace": ("shockwave", 120),
        "gavel_physical_artifact_evaluation.trace": ("gavel", 15),
    }
    for name, (fmt, count) in expected.items():
        trace = load_trace(EXAMPLES / name)
        assert (trace.fmt, len(trace), trace.dropped) == (fmt, count, 0), name


def test_demo_trace_is_reproducible(tmp_path: Path) -> None:
    script = EXAMPLES / "make_demo.py"
    copy = tmp_path / "make_demo.py"
    shutil.copy(script, copy)
    namespace: dict[str, object] = {"__name__": "make_demo", "__file__": str(copy)}
    exec(compile(copy.read_text(encoding="utf-8"), str(copy), "exec"), namespace)
    render, generate = namespace["render"], namespace["generate"]
    assert callable(render) and callable(generate)
    assert render(generate()) == (EXAMPLES / "demo.csv").read_text(encoding="utf-8")
    # and the demo uses what it promises
    trace = load_trace(EXAMPLES / "demo.csv")
    assert trace.queues == ("perception", "planning", "research")
    assert {j.spec.gpu_type for j in trace.jobs} == {"H100", "A100", ANY}
    assert {j.spec.data_region for j in trace.jobs} == {"cn-north", "eu-west", ANY}
    assert max(j.spec.nodes for j in trace.jobs) == 4
    assert sum(j.spec.time_limit_s is not None for j in trace.jobs) > len(trace) // 2
