"""Workload traces: read public GPU-cluster traces (and Corral's own CSV) into TraceJobs.

`load_trace(path)` detects the format from the file's header (or takes `fmt=`), reads `.gz`
files transparently, and returns a `Trace`: jobs sorted by (submit_time, job_id) with submit
times shifted so that the first job arrives at 0.0.

Formats (`FORMATS`):

- ``corral``: CSV with header ``job_id,submit_time,duration,gpus`` and optional columns
  ``queue,priority,gpu_type,data_region,time_limit,nodes,gpus_per_node,preemptible``. Times
  are seconds. ``any`` or empty = no constraint; defaults: queue ``default``, priority
  ``normal``, preemptible true. Without ``nodes``/``gpus_per_node`` a job of g > 8 GPUs is
  split over ceil(g/8) nodes when g divides evenly over them (16 → 2×8, 12 → 2×6); otherwise
  (e.g. 9) it is an error asking for ``nodes`` and ``gpus_per_node``.
- ``philly``: the Philly trace as published with Pollux (petuum/adaptdl, osdi21-artifact
  ``simulator/traces/philly.csv``): ``timestamp,duration,num_gpus,gpu_time,cluster``. The VC
  hash in ``cluster`` is the queue; job ids are ``philly-<row>`` (0-based data row), so they are
  stable however the file is sorted or truncated. ``gpu_time`` (= duration × num_gpus) is not used.
- ``tiresias``: ``job_id,num_gpu,submit_time,iterations,model_name,duration,interval``
  (SymbioticLab/Tiresias ``simulator/60_job.csv``); queue ``default``; name = model.
- ``gavel``: Gavel's tab-separated ``.trace`` files, 7 fields (``job_type, command,
  num_steps_arg, needs_data_dir, total_steps, arrival_time, scale_factor``) or the physical
  cluster's 10 fields (``job_type, command, working_directory, num_steps_arg, needs_data_dir,
  total_steps, scale_factor, priority_weight, SLO, arrival_time``). They give steps, not
  seconds: duration = total_steps / GAVEL_V100_STEPS_PER_S[job_type] (an approximation, see
  the table). Files named ``..._<6 hex digits>.trace`` (Gavel's per-VC Philly traces, e.g.
  ``msr_seed0_0e4a51.trace``) put their jobs in that VC's queue; others use ``default``.
- ``shockwave``: Shockwave's 12-field ``.trace`` (``job_type, command, working_directory,
  num_steps_arg, needs_data_dir, total_steps, scale_factor, mode, priority_weight, SLO,
  duration, arrival_time``); its ``duration`` field is used.

Job ids for gavel and shockwave are ``<file stem>-<row>`` (0-based). Jobs of more than 8 GPUs
become whole nodes as for ``corral``.

Public traces are data as recorded, so for ``philly``, ``tiresias``, ``gavel`` and ``shockwave``
rows that cannot be replayed are *dropped and counted* (``Trace.dropped``, with reasons in
``Trace.drop_reasons``), never silently: a duration or GPU count ≤ 0, or a GPU count that does not
split evenly over 8-GPU nodes (one 20-GPU job in Gavel's msr traces). The bundled Philly file
has no such rows. Malformed rows (a missing or non-numeric field) are always errors. In the
``corral`` format, which users write, every problem is an error.

Errors are `TraceError` with one line: ``FILE:LINE: FIELD: problem (fix)``.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from scheduler.model.cluster import ANY
from scheduler.model.job import MAX_GPUS_PER_NODE, MAX_NODES_PER_JOB, JobSpec
from scheduler.sim.records import TraceJob

__all__ = [
    "FORMATS",
    "GAVEL_V100_STEPS_PER_S",
    "GPUS_PER_NODE",
    "Trace",
    "TraceError",
    "detect_format",
    "load_trace",
    "split_gpus",
]

FORMATS: tuple[str, ...] = ("corral", "philly", "tiresias", "gavel", "shockwave")

GPUS_PER_NODE = 8
"""GPUs per node assumed when a trace gives only a job's total GPU count."""

CORRAL_REQUIRED: tuple[str, ...] = ("job_id", "submit_time", "duration", "gpus")
CORRAL_OPTIONAL: tuple[str, ...] = (
    "queue",
    "priority",
    "gpu_type",
    "data_region",
    "time_limit",
    "nodes",
    "gpus_per_node",
    "preemptible",
)
PHILLY_COLUMNS: tuple[str, ...] = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
TIRESIAS_COLUMNS: tuple[str, ...] = (
    "job_id",
    "num_gpu",
    "submit_time",
    "iterations",
    "model_name",
    "duration",
    "interval",
)

# Isolated (no co-location) training throughput in steps per second of each Gavel job type on one
# V100: the "null" entries of the "v100" section of Gavel's scheduler/oracle_throughputs.json
# (stanford-futuredata/gavel, MIT licence; Narayanan et al., "Heterogeneity-Aware Cluster
# Scheduling Policies for Deep Learning Workloads", OSDI 2020). Gavel made a trace's total_steps
# as run_time × throughput(job_type, scale_factor) with measured multi-GPU throughputs that are
# not reproduced here, so the durations derived from this single-GPU table are an approximation:
# exact for 1-GPU jobs, an over-estimate for multi-GPU jobs by up to their scaling factor.
GAVEL_V100_STEPS_PER_S: dict[str, float] = {
    "ResNet-18 (batch size 16)": 77.31737353972872,
    "ResNet-18 (batch size 32)": 65.80540708735272,
    "ResNet-18 (batch size 64)": 48.88418054077558,
    "ResNet-18 (batch size 128)": 30.287504836881368,
    "ResNet-18 (batch size 256)": 16.98737109878475,
    "ResNet-50 (batch size 16)": 17.37438936466519,
    "ResNet-50 (batch size 32)": 9.920583420101398,
    "ResNet-50 (batch size 64)": 5.4575999796347645,
    "ResNet-50 (batch size 128)": 2.8459812117650305,
    "Transformer (batch size 16)": 12.845652425203205,
    "Transformer (batch size 32)": 12.475277737306772,
    "Transformer (batch size 64)": 9.568023720783357,
    "Transformer (batch size 128)": 5.771210833383417,
    "Transformer (batch size 256)": 1.707029875260509,
    "LM (batch size 5)": 167.12285773375763,
    "LM (batch size 10)": 143.3605131584025,
    "LM (batch size 20)": 107.9508715706423,
    "LM (batch size 40)": 71.72303675816012,
    "LM (batch size 80)": 43.90361072741378,
    "Recommendation (batch size 512)": 0.33148208257478157,
    "Recommendation (batch size 1024)": 0.47997973329981225,
    "Recommendation (batch size 2048)": 0.5675318418131742,
    "Recommendation (batch size 4096)": 0.6244083613498694,
    "Recommendation (batch size 8192)": 0.6023546957515021,
    "A3C": 8.233033211429207,
    "CycleGAN": 4.918494739402234,
}

_JOB_TYPE = re.compile(r"^(?P<family>.+?)\s*\(batch size (?P<batch>\d+)\)$")
_VC_STEM = re.compile(r"(?:^|_)(?P<vc>(?=[a-f]*\d)[0-9a-f]{6})$")  # Philly VC hash: 6 hex, ≥ 1 digit
_EPOCH = datetime(1970, 1, 1)
_SECONDS_FIELDS = frozenset({"submit_time", "duration", "time_limit", "arrival_time"})
_NONE_WORDS = frozenset({"", "any", "none", "null", "-"})
_TRUE_WORDS = frozenset({"true", "yes", "y", "1", "t"})
_FALSE_WORDS = frozenset({"false", "no", "n", "0", "f"})


class TraceError(ValueError):
    """A trace that cannot be read; the message is one line: FILE:LINE: FIELD: problem (fix)."""


@dataclass(frozen=True, slots=True)
class Trace:
    """A workload: jobs in arrival order, the first arriving at 0.0."""

    jobs: tuple[TraceJob, ...]
    fmt: str
    source: str
    queues: tuple[str, ...]  # every queue a job names, sorted
    dropped: int = 0  # rows of a public trace that could not be replayed (see drop_reasons)
    drop_reasons: tuple[tuple[str, int], ...] = ()  # (reason, rows), most frequent first

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[TraceJob]:
        return iter(self.jobs)

    @property
    def gpu_seconds(self) -> float:
        """Total work: Σ duration × GPUs."""
        return math.fsum(j.duration * j.spec.gpus for j in self.jobs)

    @property
    def span(self) -> float:
        """Seconds from the first arrival to the last."""
        return self.jobs[-1].submit_time if self.jobs else 0.0

    @property
    def average_demand(self) -> float:
        """GPUs busy on average over the arrival span if every job ran at once (gpu_seconds / span)."""
        return self.gpu_seconds / self.span if self.span > 0 else 0.0


def split_gpus(gpus: int, per_node: int = GPUS_PER_NODE) -> tuple[int, int] | None:
    """(nodes, gpus_per_node) for a job of `gpus` GPUs on nodes of `per_node`; None if uneven.

    Up to `per_node` GPUs: one node. Above: ceil(gpus / per_node) nodes, each with the same
    number of GPUs, if that divides evenly (16 → (2, 8), 12 → (2, 6), 24 → (3, 8); 9 → None).
    """
    if gpus <= per_node:
        return 1, gpus
    nodes = -(-gpus // per_node)
    if gpus % nodes:
        return None
    return nodes, gpus // nodes


# --- reading -------------------------------------------------------------------------------------


def _read_text(path: Path, source: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{source}:0: file: cannot read ({exc.strerror or exc}) (check the path)") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise TraceError(f"{source}:0: file: broken gzip data ({exc}) (re-download the file)") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceError(
            f"{source}:0: file: not UTF-8 text (byte {exc.start}) (save the trace as UTF-8 CSV or TSV)"
        ) from None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _csv_header(line: str) -> list[str]:
    return [c.strip().lower() for c in next(csv.reader([line]))] if line else []


def _detect(text: str, source: str) -> str:
    first = _first_line(text)
    if not first:
        raise TraceError(f"{source}:1: file: the trace is empty (give a header line and job rows)")
    if "\t" in first:
        n = len(first.rstrip("\r\n").split("\t"))
        if n in (7, 10):
            return "gavel"
        if n == 12:
            return "shockwave"
        raise TraceError(
            f"{source}:1: format: a tab-separated line with {n} fields is no known trace "
            f"(gavel has 7 or 10 fields, shockwave 12; or pass fmt=one of {', '.join(FORMATS)})"
        )
    cols = set(_csv_header(first))
    if {"timestamp", "num_gpus", "cluster", "duration"} <= cols:
        return "philly"
    if {"job_id", "num_gpu", "submit_time", "duration"} <= cols:
        return "tiresias"
    if {"job_id", "submit_time", "duration", "gpus"} <= cols:
        return "corral"
    raise TraceError(
        f"{source}:1: header: cannot tell the trace format from columns {sorted(cols)} "
        f"(the corral format needs {','.join(CORRAL_REQUIRED)}; or pass fmt=one of {', '.join(FORMATS)})"
    )


def detect_format(path: str | Path) -> str:
    """The trace format of a file, from its first line (one of FORMATS)."""
    return _detect(_read_text(Path(path), str(path)), str(path))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".trace", ".csv", ".tsv"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "trace"


class _Rows:
    """Shared parsing helpers that know the file name, for one-line errors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.dropped: dict[str, int] = {}
        self._specs: dict[tuple[object, ...], JobSpec] = {}

    def fail(self, line: int, field: str, problem: str, fix: str) -> NoReturn:
        raise TraceError(" ".join(f"{self.source}:{line}: {field}: {problem} ({fix})".split()))

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def number(self, line: int, field: str, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            unit = " of seconds" if field in _SECONDS_FIELDS else ""
            self.fail(line, field, f"not a number: {text.strip()!r}", f"write a plain number{unit}")
        if not math.isfinite(value):
            self.fail(line, field, f"not a finite number: {text.strip()!r}", "write a plain number")
        return value

    def whole(self, line: int, field: str, text: str) -> int:
        stripped = text.strip()
        try:
            return int(stripped)
        except ValueError:
            pass
        try:
            value = float(stripped)
        except ValueError:
            self.fail(line, field, f"not a whole number: {stripped!r}", "write an integer")
        if not value.is_integer():
            self.fail(line, field, f"not a whole number: {stripped!r}", "write an integer")
        return int(value)

    def spec(self, line: int, **fields: object) -> JobSpec:
        """A validated JobSpec; equal specs are built once and shared (they are immutable)."""
        key = tuple(sorted(fields.items()))
        spec = self._specs.get(key)
        if spec is None:
            try:
                spec = JobSpec.model_validate(fields)
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in err.get("loc", ())) or "spec"
                self.fail(line, loc, str(err.get("msg", "invalid value")), "fix the value")
            self._specs[key] = spec
        return spec


def _shape(rows: _Rows, line: int, gpus: int, *, lenient: bool) -> tuple[int, int] | None:
    """(nodes, gpus_per_node) for a job of `gpus` GPUs; for lenient (public) traces None = drop."""
    if gpus <= 0:
        if lenient:
            rows.drop("GPU count ≤ 0")
            return None
        rows.fail(line, "gpus", f"must be ≥ 1 (got {gpus})", "give the job's GPU count")
    shape = split_gpus(gpus)
    if shape is None:
        if lenient:
            rows.drop(f"{GPUS_PER_NODE}-GPU-node split uneven")
            return None
        rows.fail(
            line,
            "gpus",
            f"{gpus} GPUs do not split evenly over {-(-gpus // GPUS_PER_NODE)} nodes of {GPUS_PER_NODE}",
            "give nodes and gpus_per_node",
        )
    if shape[0] > MAX_NODES_PER_JOB:
        if lenient:
            rows.drop(f"more than {MAX_NODES_PER_JOB} nodes")
            return None
        rows.fail(line, "gpus", f"{gpus} GPUs need more than {MAX_NODES_PER_JOB} nodes", "use a smaller job")
    return shape


def _duration_ok(rows: _Rows, duration: float) -> bool:
    if duration > 0:
        return True
    rows.drop("duration ≤ 0")
    return False


_Parsed = list[TraceJob]


# --- corral ----------------------------------------------------------------------------------------


def _opt(text: str | None) -> str | None:
    if text is None:
        return None
    stripped = text.strip()
    return None if stripped.lower() in _NONE_WORDS else stripped


def _parse_corral(text: str, source: str, path: Path) -> tuple[_Parsed, _Rows]:
    rows = _Rows(source)
    reader = csv.reader(io.StringIO(text))
    header_raw = next(reader, None)
    if header_raw is None:
        rows.fail(1, "header", "the trace is empty", f"start with the header {','.join(CORRAL_REQUIRED)}")
    header = [c.strip().lower() for c in header_raw]
    allowed = set(CORRAL_REQUIRED) | set(CORRAL_OPTIONAL)
    for col in header:
        if col not in allowed:
            rows.fail(
                1,
                col or "(empty column name)",
                "unknown column",
                f"columns are {','.join(CORRAL_REQUIRED)} and optionally {','.join(CORRAL_OPTIONAL)}",
            )
        if header.count(col) > 1:
            rows.fail(1, col, "column appears twice", "keep one")
    for col in CORRAL_REQUIRED:
        if col not in header:
            rows.fail(1, col, "missing column", f"the header needs {','.join(CORRAL_REQUIRED)}")
    idx = {col: i for i, col in enumerate(header)}
    width = len(header)
    seen: dict[str, int] = {}
    jobs: _Parsed = []

    def cell(row: Sequence[str], col: str) -> str | None:
        i = idx.get(col)
        return row[i] if i is not None else None

    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != width:
            rows.fail(line, "row", f"has {len(row)} fields, the header has {width}", "one value per column")
        job_id = row[idx["job_id"]].strip()
        if not job_id:
            rows.fail(line, "job_id", "empty", "give every job an id")
        if job_id in seen:
            rows.fail(line, "job_id", f"{job_id!r} also on line {seen[job_id]}", "make job ids unique")
        seen[job_id] = line
        submit = rows.number(line, "submit_time", row[idx["submit_time"]])
        duration = rows.number(line, "duration", row[idx["duration"]])
        if duration <= 0:
            rows.fail(line, "duration", f"must be > 0 seconds (got {duration:g})", "give the job's runtime")
        gpus = rows.whole(line, "gpus", row[idx["gpus"]])
        if gpus <= 0:
            rows.fail(line, "gpus", f"must be ≥ 1 (got {gpus})", "give the job's GPU count")
        nodes_text = _opt(cell(row, "nodes"))
        gpn_text = _opt(cell(row, "gpus_per_node"))
        nodes = rows.whole(line, "nodes", nodes_text) if nodes_text is not None else None
        gpn = rows.whole(line, "gpus_per_node", gpn_text) if gpn_text is not None else None
        if nodes is not None and nodes <= 0:
            rows.fail(line, "nodes", f"must be ≥ 1 (got {nodes})", "give the number of nodes")
        if gpn is not None and gpn <= 0:
            rows.fail(line, "gpus_per_node", f"must be ≥ 1 (got {gpn})", "give GPUs per node")
        if nodes is not None and gpn is not None:
            if nodes * gpn != gpus:
                rows.fail(
                    line,
                    "gpus",
                    f"{gpus} GPUs ≠ nodes × gpus_per_node = {nodes}×{gpn}",
                    "make gpus = nodes × gpus_per_node",
                )
        elif nodes is not None:
            if gpus % nodes:
                rows.fail(
                    line, "nodes", f"{gpus} GPUs do not split evenly over {nodes} nodes", "give gpus_per_node"
                )
            gpn = gpus // nodes
        elif gpn is not None:
            if gpus % gpn:
                rows.fail(line, "gpus_per_node", f"{gpus} GPUs is not a multiple of {gpn}", "give nodes too")
            nodes = gpus // gpn
        else:
            shape = _shape(rows, line, gpus, lenient=False)
            assert shape is not None
            nodes, gpn = shape
        assert nodes is not None and gpn is not None
        if gpn > MAX_GPUS_PER_NODE:
            rows.fail(line, "gpus_per_node", f"must be ≤ {MAX_GPUS_PER_NODE} (got {gpn})", "use more nodes")
        limit_text = _opt(cell(row, "time_limit"))
        time_limit = rows.number(line, "time_limit", limit_text) if limit_text is not None else None
        if time_limit is not None and time_limit <= 0:
            rows.fail(
                line, "time_limit", f"must be > 0 seconds (got {time_limit:g})", "leave it empty for none"
            )
        pre_text = (cell(row, "preemptible") or "").strip().lower()
        if pre_text in ("", "-") or pre_text in _TRUE_WORDS:
            preemptible = True
        elif pre_text in _FALSE_WORDS:
            preemptible = False
        else:
            rows.fail(line, "preemptible", f"not a boolean: {pre_text!r}", "write true or false")
        spec = rows.spec(
            line,
            queue=(cell(row, "queue") or "").strip() or "default",
            priority=(cell(row, "priority") or "").strip() or "normal",
            nodes=nodes,
            gpus_per_node=gpn,
            gpu_type=_opt(cell(row, "gpu_type")) or ANY,
            data_region=_opt(cell(row, "data_region")) or ANY,
            time_limit_s=time_limit,
            preemptible=preemptible,
        )
        jobs.append(TraceJob(job_id=job_id, submit_time=submit, duration=duration, spec=spec))
    return jobs, rows


# --- philly -----------------------------------------------------------------------------------------


def _header_index(rows: _Rows, header: list[str], needed: Sequence[str], fmt: str) -> dict[str, int]:
    idx = {col: i for i, col in enumerate(header)}
    for col in needed:
        if col not in idx:
            rows.fail(1, col, f"missing column for the {fmt} format", f"the header needs {','.join(needed)}")
    return idx


def _parse_philly(text: str, source: str, path: Path) -> tuple[_Parsed, _Rows]:
    rows = _Rows(source)
    lines = text.splitlines()
    if not lines:
        rows.fail(1, "header", "the trace is empty", f"start with the header {','.join(PHILLY_COLUMNS)}")
    header = _csv_header(lines[0])
    idx = _header_index(rows, header, ("timestamp", "duration", "num_gpus", "cluster"), "philly")
    i_ts, i_dur, i_gpu, i_vc = idx["timestamp"], idx["duration"], idx["num_gpus"], idx["cluster"]
    width = len(header)
    fromiso = datetime.fromisoformat
    jobs: _Parsed = []
    row_index = -1
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row_index += 1
        row = line.split(",")
        if len(row) != width:
            if '"' in line:  # quoted fields: fall back to the csv module for this line
                row = next(csv.reader([line]))
            if len(row) != width:
                rows.fail(
                    lineno, "row", f"has {len(row)} fields, the header has {width}", "one value per column"
                )
        try:
            submit = (fromiso(row[i_ts].strip()) - _EPOCH).total_seconds()
        except ValueError:
            rows.fail(lineno, "timestamp", f"not a date-time: {row[i_ts]!r}", "write YYYY-mm-dd HH:MM:SS")
        duration = rows.number(lineno, "duration", row[i_dur])
        gpus = rows.whole(lineno, "num_gpus", row[i_gpu])
        queue = row[i_vc].strip()
        if not queue:
            rows.fail(lineno, "cluster", "empty virtual cluster", "give the job's VC")
        if not _duration_ok(rows, duration):
            continue
        shape = _shape(rows, lineno, gpus, lenient=True)
        if shape is None:
            continue
        spec = rows.spec(lineno, queue=queue, nodes=shape[0], gpus_per_node=shape[1])
        jobs.append(TraceJob(job_id=f"philly-{row_index}", submit_time=submit, duration=duration, spec=spec))
    return jobs, rows


# --- tiresias ----------------------------------------------------------------------------------------


def _parse_tiresias(text: str, source: str, path: Path) -> tuple[_Parsed, _Rows]:
    rows = _Rows(source)
    reader = csv.reader(io.StringIO(text))
    header_raw = next(reader, None)
    if header_raw is None:
        rows.fail(1, "header", "the trace is empty", f"start with the header {','.join(TIRESIAS_COLUMNS)}")
    header = [c.strip().lower() for c in header_raw]
    idx = _header_index(rows, header, ("job_id", "num_gpu", "submit_time", "duration"), "tiresias")
    i_model = idx.get("model_name")
    seen: set[str] = set()
    jobs: _Parsed = []
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            rows.fail(
                line, "row", f"has {len(row)} fields, the header has {len(header)}", "one value per column"
            )
        job_id = row[idx["job_id"]].strip()
        if not job_id or job_id in seen:
            rows.fail(line, "job_id", f"empty or repeated id {job_id!r}", "make job ids unique")
        seen.add(job_id)
        submit = rows.number(line, "submit_time", row[idx["submit_time"]])
        duration = rows.number(line, "duration", row[idx["duration"]])
        gpus = rows.whole(line, "num_gpu", row[idx["num_gpu"]])
        if not _duration_ok(rows, duration):
            continue
        shape = _shape(rows, line, gpus, lenient=True)
        if shape is None:
            continue
        name = (row[i_model].strip() if i_model is not None else "") or "job"
        spec = rows.spec(line, name=name[:128], nodes=shape[0], gpus_per_node=shape[1])
        jobs.append(TraceJob(job_id=job_id, submit_time=submit, duration=duration, spec=spec))
    return jobs, rows


# --- gavel and shockwave ---------------------------------------------------------------------------


def gavel_steps_per_second(job_type: str) -> float | None:
    """Single-V100 steps/s of a Gavel job type; by model family and nearest batch size if the
    exact type is not in GAVEL_V100_STEPS_PER_S; None for an unknown model family."""
    exact = GAVEL_V100_STEPS_PER_S.get(job_type)
    if exact is not None:
        return exact
    m = _JOB_TYPE.match(job_type.strip())
    family = m.group("family").strip() if m else job_type.strip()
    batch = int(m.group("batch")) if m else None
    candidates: list[tuple[float, float]] = []  # (distance, throughput)
    for known, rate in GAVEL_V100_STEPS_PER_S.items():
        km = _JOB_TYPE.match(known)
        kfamily = km.group("family") if km else known
        if kfamily.lower() != family.lower():
            continue
        kbatch = int(km.group("batch")) if km else None
        if batch is None or kbatch is None:
            distance = 0.0 if batch == kbatch else 1.0
        else:
            distance = abs(math.log2(batch) - math.log2(kbatch))
        candidates.append((distance, rate))
    if not candidates:
        return None
    if batch is None:  # no batch size: geometric mean of the family
        return math.exp(math.fsum(math.log(r) for _, r in candidates) / len(candidates))
    return min(candidates)[1]


def _parse_tsv(text: str, source: str, path: Path, fmt: str) -> tuple[_Parsed, _Rows]:
    rows = _Rows(source)
    stem = _stem(path)
    vc = _VC_STEM.search(stem)
    queue = vc.group("vc") if vc and fmt == "gavel" else "default"
    jobs: _Parsed = []
    width: int | None = None
    index = -1
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if width is None:
            width = len(fields)
            ok = (7, 10) if fmt == "gavel" else (12,)
            if width not in ok:
                rows.fail(
                    lineno,
                    "row",
                    f"has {width} tab-separated fields, the {fmt} format has {' or '.join(map(str, ok))}",
                    "check the file is a Gavel/Shockwave .trace",
                )
        elif len(fields) != width:
            rows.fail(lineno, "row", f"has {len(fields)} fields, line 1 has {width}", "one job per line")
        index += 1
        job_type = fields[0].strip()
        if not job_type:
            rows.fail(lineno, "job_type", "empty", "name the model, e.g. 'ResNet-18 (batch size 64)'")
        if fmt == "shockwave":
            gpus = rows.whole(lineno, "scale_factor", fields[6])
            duration = rows.number(lineno, "duration", fields[10])
            submit = rows.number(lineno, "arrival_time", fields[11])
        else:
            if width == 7:
                steps_text, arrival_text, scale_text = fields[4], fields[5], fields[6]
            else:
                steps_text, arrival_text, scale_text = fields[5], fields[9], fields[6]
            steps = rows.number(lineno, "total_steps", steps_text)
            submit = rows.number(lineno, "arrival_time", arrival_text)
            gpus = rows.whole(lineno, "scale_factor", scale_text)
            rate = gavel_steps_per_second(job_type)
            if rate is None:
                rows.fail(
                    lineno,
                    "job_type",
                    f"unknown model {job_type!r}, so its steps cannot be turned into seconds",
                    "add it to GAVEL_V100_STEPS_PER_S or convert the trace to the corral format",
                )
            duration = steps / rate
        if not _duration_ok(rows, duration):
            continue
        shape = _shape(rows, lineno, gpus, lenient=True)
        if shape is None:
            continue
        spec = rows.spec(lineno, name=job_type[:128], queue=queue, nodes=shape[0], gpus_per_node=shape[1])
        jobs.append(TraceJob(job_id=f"{stem}-{index}", submit_time=submit, duration=duration, spec=spec))
    return jobs, rows


# --- public API ------------------------------------------------------------------------------------

_Parser = Callable[[str, str, Path], tuple[_Parsed, _Rows]]


_PARSERS: dict[str, _Parser] = {
    "corral": _parse_corral,
    "philly": _parse_philly,
    "tiresias": _parse_tiresias,
    "gavel": lambda t, s, p: _parse_tsv(t, s, p, "gavel"),
    "shockwave": lambda t, s, p: _parse_tsv(t, s, p, "shockwave"),
}


def load_trace(path: str | Path, fmt: str | None = None, limit: int | None = None) -> Trace:
    """Read a trace file (plain or .gz) into a Trace.

    `fmt`: one of FORMATS, or None to detect it from the header. `limit`: keep only the first
    `limit` jobs in arrival order (after sorting, so it works on unsorted files such as Philly's).
    """
    source = str(path)
    p = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise TraceError(f"{source}:0: fmt: unknown trace format {fmt!r} (use one of {', '.join(FORMATS)})")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be ≥ 0, got {limit}")
    text = _read_text(p, source)
    fmt = fmt or _detect(text, source)
    jobs, rows = _PARSERS[fmt](text, source, p)
    if not jobs:
        why = f" ({sum(rows.dropped.values())} rows dropped)" if rows.dropped else ""
        raise TraceError(f"{source}:1: jobs: the trace has no jobs{why} (add job rows after the header)")
    jobs.sort(key=lambda j: (j.submit_time, j.job_id))
    if limit is not None:
        jobs = jobs[:limit]
    t0 = jobs[0].submit_time if jobs else 0.0
    if t0 != 0.0:
        jobs = [TraceJob(j.job_id, j.submit_time - t0, j.duration, j.spec) for j in jobs]
    reasons = tuple(sorted(rows.dropped.items(), key=lambda kv: (-kv[1], kv[0])))
    return Trace(
        jobs=tuple(jobs),
        fmt=fmt,
        source=source,
        queues=tuple(sorted({j.spec.queue for j in jobs})),
        dropped=sum(rows.dropped.values()),
        drop_reasons=reasons,
    )
