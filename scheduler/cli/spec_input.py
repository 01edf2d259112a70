"""A JobSpec from a job file and `corral submit` flags (flags win), checked before anything is sent.

Job file keys are the JobSpec field names (see `corral schema`) plus two shorthands the flags share:

    gpus: 16        → 2 nodes × 8 GPUs (≤ 8: one node; else whole 8-GPU nodes, unless
                      gpus_per_node / --gpus-per-node names the node width, or nodes / --nodes the count)
    time: 1h30m     → time_limit_s: 5400 (also 90s, 30m, 2h, HH:MM:SS, MM:SS, plain seconds)

Every mistake is one line that names where it is (`job.yaml:4: gpus_per_node: ...` or
`--gpus: ...`) and the fix.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from scheduler import bounded_yaml
from scheduler.api.errors import describe_error
from scheduler.cli.errors import fail
from scheduler.client import spec as client_spec
from scheduler.client.spec import DEFAULT_NODE_GPUS
from scheduler.model.job import JobSpec

__all__ = ["DEFAULT_NODE_GPUS", "FLAG_OF", "SpecInput", "gang_shape", "parse_duration"]

MAX_SPEC_BYTES = 64 * 1024  # the API's body limit: a bigger spec could never be submitted

FLAG_OF: Mapping[str, str] = {
    "name": "--name",
    "queue": "--queue",
    "priority": "--priority",
    "nodes": "--nodes",
    "gpus_per_node": "--gpus-per-node",
    "gpu_type": "--gpu-type",
    "time_limit_s": "--time",
    "checkpoint_dir": "--checkpoint-dir",
    "data_region": "--region",
    "grace_period_s": "--grace",
    "command": "-- CMD",
    "env": "--env",
    "idempotency_key": "--idempotency-key",
}
_SHORTHANDS = {"gpus", "time"}

_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_UNITS = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def parse_duration(text: str) -> float:
    """Seconds in `text`: 90, 90s, 30m, 2h, 1h30m, 1d, HH:MM:SS or MM:SS. ValueError if none."""
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration")
    if ":" in raw:
        parts = raw.split(":")
        if len(parts) > 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{_quoted(text)} is not HH:MM:SS or MM:SS")
        seconds = 0
        for p in parts:
            seconds = seconds * 60 + int(p)
        return float(seconds)
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"{_quoted(text)} is not a duration")
        return value
    if _UNITS.sub("", raw) != "" or not _UNITS.search(raw):
        raise ValueError(f"{_quoted(text)} is not a duration")
    return float(sum(float(n) * _UNIT_S[u] for n, u in _UNITS.findall(raw)))


def _quoted(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def gang_shape(gpus: int, nodes: int | None, width: int | None, where: str) -> tuple[int, int]:
    """(nodes, gpus_per_node) for a total of `gpus` (scheduler.client.spec's rules); exit 2 if none."""
    try:
        return client_spec.gang_shape(gpus, nodes, width, where)
    except client_spec.ShapeError as exc:
        fail(str(exc))


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class SpecInput:
    """Spec fields with where each came from: a line of the job file, or a flag."""

    source: str | None = None  # the job file's name
    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # key → line in the job file
    from_flag: set[str] = field(default_factory=set)

    # --- reading ------------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: Path) -> SpecInput:
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_SPEC_BYTES + 1)  # bounded: `corral submit /dev/zero` must not eat memory
        except FileNotFoundError:
            fail(
                f"{path}: no such job file — give a YAML job file, or put a command after --: "
                "corral submit -- python train.py"
            )
        except OSError as exc:
            fail(f"{path}: cannot read ({exc.strerror or exc}) — check the path")
        if len(raw) > MAX_SPEC_BYTES:
            fail(f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB — a job file is a short YAML spec")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            fail(f"{path}: not UTF-8 text — a job file is a short YAML spec")
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str) -> SpecInput:
        try:
            loaded = bounded_yaml.load(text)
        except bounded_yaml.YamlInputError as exc:
            fail(_one_line(f"{source}:{exc.line}: {exc.message} — fix the YAML on this line"))
        data, root = loaded.data, loaded.root
        out = cls(source=source)
        if data is None:
            return out
        if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
            fail(f"{source}:1: the job file must be a mapping of spec fields (name: ..., command: ...)")
        for key_node, _ in root.value:
            out.lines[str(key_node.value)] = key_node.start_mark.line + 1
        allowed = set(JobSpec.model_fields) | _SHORTHANDS
        for key, value in data.items():
            if str(key) not in allowed:
                out.fail_at(
                    str(key), f"unknown field — use one of {', '.join(sorted(allowed))} (see `corral schema`)"
                )
            out.data[str(key)] = value
        return out

    # --- where a field came from ---------------------------------------------------------------

    def where(self, key: str) -> str:
        if key in self.from_flag:
            return FLAG_OF.get(key, f"--{key}")
        if key in self.lines and self.source:
            return f"{self.source}:{self.lines[key]}: {key}"
        return f"spec.{key}"

    def fail_at(self, key: str, problem: str) -> NoReturn:
        fail(_one_line(f"{self.where(key)}: {problem}"))

    def set_flag(self, key: str, value: Any) -> None:
        if value is not None:
            self.data[key] = value
            self.from_flag.add(key)

    # --- shorthands and validation -------------------------------------------------------------

    def resolve_time(self, flag: str | None) -> None:
        if flag is not None:
            self.data.pop("time", None)
            try:
                self.set_flag("time_limit_s", parse_duration(flag))
            except ValueError as exc:
                fail(f"--time: {exc} — write e.g. 90s, 30m, 2h, 1h30m, HH:MM:SS or seconds")
            return
        if "time" in self.data:
            raw = self.data.pop("time")
            try:
                seconds = parse_duration(str(raw))
            except ValueError as exc:
                self.fail_at("time", f"{exc} — write e.g. 90s, 30m, 2h, 1h30m, HH:MM:SS or seconds")
            self.data["time_limit_s"] = seconds
            if "time" in self.lines:
                self.lines["time_limit_s"] = self.lines["time"]

    def resolve_gpus(self, flag_gpus: int | None) -> None:
        """Turn a total GPU count (flag, else file) into nodes × gpus_per_node."""
        if flag_gpus is not None:
            self.data.pop("gpus", None)
            nodes = self.data.get("nodes") if "nodes" in self.from_flag else None
            width = self.data.get("gpus_per_node") if "gpus_per_node" in self.from_flag else None
            count, per_node = gang_shape(flag_gpus, nodes, width, "--gpus")
            self.set_flag("nodes", count)
            self.set_flag("gpus_per_node", per_node)
            return
        if "gpus" not in self.data:
            return
        raw = self.data.pop("gpus")
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.fail_at("gpus", f"must be a whole number (got {raw!r}) — write e.g. gpus: 8")
        nodes, width = self.data.get("nodes"), self.data.get("gpus_per_node")
        count, per_node = gang_shape(
            raw,
            nodes if isinstance(nodes, int) else None,
            width if isinstance(width, int) else None,
            self.where("gpus"),
        )
        self.data["nodes"], self.data["gpus_per_node"] = count, per_node
        for key in ("nodes", "gpus_per_node"):
            if key not in self.from_flag and "gpus" in self.lines:
                self.lines.setdefault(key, self.lines["gpus"])

    def build(self) -> JobSpec:
        # As with Slurm's sbatch, a job runs in the directory it was submitted from unless told otherwise.
        self.data.setdefault("working_dir", os.getcwd())
        try:
            return JobSpec.submitted(self.data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key, message = describe_error(err)
            top = key.split(".", 1)[0]
            # describe_error says `spec.<field>: ...`; say where the user wrote it instead
            prefix = f"spec.{key}" if key != "spec" else "spec"
            fail(_one_line(message.replace(prefix, self.where(top) if top in self.data else prefix, 1)))
