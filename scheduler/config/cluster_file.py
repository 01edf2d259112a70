"""The cluster file: regions → racks of identical nodes, queues and priority classes, in YAML.

```yaml
regions:
  - name: cn-north
    zone: cn-north-1            # optional, default "<region>-a"
    racks:
      - {name: r1, nodes: 8, gpu_type: H100, gpus_per_node: 8, nvlink_domain_size: 8}
queues:                          # optional; see ensure_queues for queues a trace adds
  - {name: perception, cohort: autopilot, quota: {H100: 64}, borrowing_limit: 64, lending_limit: null}
priority_classes:                # optional; default low=0, normal=100, high=1000
  - {name: low, value: 0, preempts_lower: false}
default_time_limit_s: 86400      # optional: the time limit of a job submitted without one
```

A queue may set its own `default_time_limit_s` (it wins over the cluster's).

Rack keys: `name`, `nodes`, `gpu_type`, `gpus_per_node` (required); `nvlink_domain_size`, `cpus`,
`memory_gb`, `labels` (optional). Node ids are `<region>-<rack>-nNN` (NN counts from 00 within the
rack); `Node.rack` is `<region>/<rack>` so racks stay unique across regions; with
`nvlink_domain_size: k` consecutive runs of k nodes share `Node.nvlink_domain = <region>/<rack>/d<i>`.

Every mistake raises `ClusterFileError` with one line: `FILE:LINE: field.path: problem (fix)`.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from scheduler import bounded_yaml
from scheduler.model.cluster import Node
from scheduler.model.job import MAX_GPUS_PER_NODE, MAX_TIME_S
from scheduler.model.queue import DEFAULT_PRIORITY_CLASSES, ClusterConfig, PriorityClass, Queue

__all__ = ["DEFAULT_COHORT", "ClusterFileError", "ensure_queues", "load_cluster", "parse_cluster"]

DEFAULT_COHORT = "default"
"""Cohort of the queues that ensure_queues creates."""

_PathT = tuple[str | int, ...]

_TOP_KEYS = {
    "regions",
    "queues",
    "priority_classes",
    "policy",
    "default_time_limit_s",
}  # policy: read by PolicyConfig
_REGION_KEYS = {"name", "zone", "racks"}
_RACK_REQUIRED = ("name", "nodes", "gpu_type", "gpus_per_node")
_RACK_KEYS = {*_RACK_REQUIRED, "nvlink_domain_size", "cpus", "memory_gb", "labels"}
_QUEUE_KEYS = {
    "name",
    "cohort",
    "quota",
    "borrowing_limit",
    "lending_limit",
    "weight",
    "default_time_limit_s",
}
_PC_KEYS = {"name", "value", "preempts_lower"}


class ClusterFileError(ValueError):
    """A cluster file that cannot be used; the message is one line: FILE:LINE: field: problem (fix)."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fmt_path(path: _PathT) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


class _Doc:
    """The parsed file plus a map from field paths to YAML line numbers (1-based)."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[_PathT, int] = {}
        try:
            loaded = bounded_yaml.load(text, duplicates_ok=True)  # _index names duplicates by field
        except bounded_yaml.YamlInputError as exc:
            raise ClusterFileError(
                _one_line(f"{source}:{exc.line}: {exc.message} (fix the YAML on this line)")
            ) from None
        self.data: Any = loaded.data
        root = loaded.root
        if root is not None:
            self._index(root, ())

    def _index(self, node: yaml.Node, path: _PathT) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    self.fail(
                        (*path, key),
                        f"duplicate key {key!r}",
                        "keep one of them",
                        line=key_node.start_mark.line + 1,
                    )
                seen.add(key)
                self._index(value_node, (*path, key))
                # point at the key's line: that is where a user looks for "field: value"
                self.lines[(*path, key)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, (*path, i))

    def line(self, path: _PathT) -> int:
        for n in range(len(path), -1, -1):
            found = self.lines.get(path[:n])
            if found is not None:
                return found
        return 1

    def fail(self, path: _PathT, problem: str, fix: str, line: int | None = None) -> NoReturn:
        where = line if line is not None else self.line(path)
        raise ClusterFileError(_one_line(f"{self.source}:{where}: {_fmt_path(path)}: {problem} ({fix})"))


# --- typed field readers -------------------------------------------------------------------------


def _mapping(doc: _Doc, value: Any, path: _PathT, allowed: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        doc.fail(
            path, f"must be a mapping of {what} fields (got {type(value).__name__})", "write key: value pairs"
        )
    for key in value:
        if not isinstance(key, str):
            doc.fail(path, f"key {key!r} is not a string", "use a field name as key")
        if key not in allowed:
            doc.fail((*path, key), "unknown key", f"allowed keys: {', '.join(sorted(allowed))}")
    return value


def _list(doc: _Doc, value: Any, path: _PathT, *, non_empty: bool) -> Sequence[Any]:
    if not isinstance(value, list):
        doc.fail(path, f"must be a list (got {type(value).__name__})", "write one '- ...' item per entry")
    if non_empty and not value:
        doc.fail(path, "must not be empty", "add at least one entry")
    return value


def _name(doc: _Doc, obj: Mapping[str, Any], path: _PathT, key: str = "name") -> str:
    if key not in obj:
        doc.fail(path, f"missing required key {key!r}", f"add {key}: <name>")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        doc.fail((*path, key), f"must be a non-empty string (got {value!r})", "give a name")
    text = str(value).strip()
    if any(c in text for c in "/\n\t "):
        doc.fail(
            (*path, key), f"must not contain spaces or '/' (got {text!r})", "use letters, digits, '-' or '_'"
        )
    return text


def _int(
    doc: _Doc,
    obj: Mapping[str, Any],
    path: _PathT,
    key: str,
    *,
    minimum: int,
    maximum: int | None = None,
    default: int | None = None,
    required: bool = False,
) -> int | None:
    if key not in obj or obj[key] is None:
        if required:
            doc.fail(path, f"missing required key {key!r}", f"add {key}: <whole number ≥ {minimum}>")
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            doc.fail(
                (*path, key),
                f"must be a whole number (got {value!r})",
                f"write e.g. {key}: {max(minimum, 1)}",
            )
    if value < minimum:
        doc.fail((*path, key), f"must be ≥ {minimum} (got {value})", f"set {key} to {minimum} or more")
    if maximum is not None and value > maximum:
        doc.fail((*path, key), f"must be ≤ {maximum} (got {value})", f"set {key} to {maximum} or less")
    return int(value)


def _req_int(
    doc: _Doc, obj: Mapping[str, Any], path: _PathT, key: str, *, minimum: int, maximum: int | None = None
) -> int:
    value = _int(doc, obj, path, key, minimum=minimum, maximum=maximum, required=True)
    assert value is not None
    return value


# --- sections ------------------------------------------------------------------------------------


def _nodes(doc: _Doc, regions_raw: Any) -> list[Node]:
    regions = _list(doc, regions_raw, ("regions",), non_empty=True)
    nodes: list[Node] = []
    region_names: set[str] = set()
    for ri, region_raw in enumerate(regions):
        rpath: _PathT = ("regions", ri)
        region = _mapping(doc, region_raw, rpath, _REGION_KEYS, "region")
        rname = _name(doc, region, rpath)
        if rname in region_names:
            doc.fail((*rpath, "name"), f"duplicate region name {rname!r}", "give each region its own name")
        region_names.add(rname)
        zone = region.get("zone")
        if zone is None:
            zone = f"{rname}-a"
        elif not isinstance(zone, str) or not zone.strip():
            doc.fail(
                (*rpath, "zone"),
                f"must be a non-empty string (got {zone!r})",
                "give a zone name or drop the key",
            )
        if "racks" not in region:
            doc.fail(rpath, "missing required key 'racks'", "add racks: [{name: r1, nodes: 8, ...}]")
        racks = _list(doc, region["racks"], (*rpath, "racks"), non_empty=True)
        rack_names: set[str] = set()
        for ki, rack_raw in enumerate(racks):
            kpath: _PathT = (*rpath, "racks", ki)
            rack = _mapping(doc, rack_raw, kpath, _RACK_KEYS, "rack")
            for key in _RACK_REQUIRED:
                if key not in rack:
                    doc.fail(
                        kpath,
                        f"missing required key {key!r}",
                        f"add {key}: ... (a rack needs {', '.join(_RACK_REQUIRED)})",
                    )
            kname = _name(doc, rack, kpath)
            if kname in rack_names:
                doc.fail(
                    (*kpath, "name"),
                    f"duplicate rack name {kname!r} in region {rname}",
                    "give each rack its own name",
                )
            rack_names.add(kname)
            count = _req_int(doc, rack, kpath, "nodes", minimum=1, maximum=100_000)
            gpus = _req_int(doc, rack, kpath, "gpus_per_node", minimum=1, maximum=MAX_GPUS_PER_NODE)
            gpu_type = _name(doc, rack, kpath, "gpu_type")
            if gpu_type.lower() == "any":
                doc.fail((*kpath, "gpu_type"), "'any' is reserved for jobs", "name the GPU model, e.g. H100")
            domain = _int(doc, rack, kpath, "nvlink_domain_size", minimum=1)
            cpus = _req_or_default(doc, rack, kpath, "cpus", 96)
            memory = _req_or_default(doc, rack, kpath, "memory_gb", 1024)
            labels = _labels(doc, rack.get("labels"), (*kpath, "labels"))
            for i in range(count):
                nodes.append(
                    Node(
                        id=f"{rname}-{kname}-n{i:02d}",
                        region=rname,
                        zone=zone.strip(),
                        rack=f"{rname}/{kname}",
                        nvlink_domain=f"{rname}/{kname}/d{i // domain}" if domain else "",
                        gpu_type=gpu_type,
                        gpus=gpus,
                        cpus=cpus,
                        memory_gb=memory,
                        labels=dict(labels),
                    )
                )
    return nodes


def _req_or_default(doc: _Doc, obj: Mapping[str, Any], path: _PathT, key: str, default: int) -> int:
    value = _int(doc, obj, path, key, minimum=1, default=default)
    assert value is not None
    return value


# Node labels become Ray node labels, which follow Kubernetes' syntax: [prefix/]name, value.
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def _labels(doc: _Doc, raw: Any, path: _PathT) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        doc.fail(
            path, f"must be a mapping of strings (got {type(raw).__name__})", "write labels: {key: value}"
        )
    labels = {str(k): "" if v is None else str(v) for k, v in raw.items()}
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        bad_prefix = prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix))
        if not name or not _LABEL_NAME.match(name) or bad_prefix:
            doc.fail(
                (*path, key),
                f"{_short(key)} is not a label key",
                "use [dns.prefix/]name, name 1-63 letters, digits, '-', '_' or '.'",
            )
        if not _LABEL_NAME.match(value):
            doc.fail(
                (*path, key),
                f"{_short(value)} is not a label value",
                "use up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            )
    return labels


def _short(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _queues(doc: _Doc, raw: Any) -> list[Queue]:
    if raw is None:
        return []
    items = _list(doc, raw, ("queues",), non_empty=False)
    queues: list[Queue] = []
    seen: set[str] = set()
    for qi, item in enumerate(items):
        qpath: _PathT = ("queues", qi)
        q = _mapping(doc, item, qpath, _QUEUE_KEYS, "queue")
        name = _name(doc, q, qpath)
        if name in seen:
            doc.fail((*qpath, "name"), f"duplicate queue name {name!r}", "give each queue its own name")
        seen.add(name)
        cohort = q.get("cohort")
        if cohort is not None:
            cohort = _name(doc, q, qpath, "cohort")
        quota_raw = q.get("quota") or {}
        if not isinstance(quota_raw, dict):
            doc.fail(
                (*qpath, "quota"), f"must map GPU type → GPUs (got {quota_raw!r})", "write quota: {H100: 64}"
            )
        quota: dict[str, int] = {}
        for gpu_type in quota_raw:
            value = _req_int(doc, quota_raw, (*qpath, "quota"), gpu_type, minimum=0)
            quota[str(gpu_type)] = value
        borrowing = _int(doc, q, qpath, "borrowing_limit", minimum=0)
        lending = _int(doc, q, qpath, "lending_limit", minimum=0)
        weight_raw = q.get("weight", 1.0)
        if (
            isinstance(weight_raw, bool)
            or not isinstance(weight_raw, int | float)
            or not math.isfinite(weight_raw)
        ):
            doc.fail((*qpath, "weight"), f"must be a number (got {weight_raw!r})", "write e.g. weight: 1")
        if weight_raw <= 0:
            doc.fail((*qpath, "weight"), f"must be > 0 (got {weight_raw})", "use a positive weight, e.g. 1")
        default_limit = _seconds(doc, q, qpath, "default_time_limit_s")
        try:
            queues.append(
                Queue(
                    name=name,
                    cohort=cohort,
                    quota=quota,
                    borrowing_limit=borrowing,
                    lending_limit=lending,
                    weight=float(weight_raw),
                    default_time_limit_s=default_limit,
                )
            )
        except ValidationError as exc:  # pragma: no cover - every field was checked above
            _from_validation(doc, exc, qpath)
    return queues


def _seconds(doc: _Doc, obj: Mapping[str, Any], path: _PathT, key: str) -> float | None:
    """An optional positive, finite number of seconds (at most MAX_TIME_S)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        doc.fail((*path, key), f"must be a number of seconds (got {value!r})", f"write e.g. {key}: 86400")
    if not 0 < value <= MAX_TIME_S:
        doc.fail(
            (*path, key), f"must be > 0 and ≤ {MAX_TIME_S:.0f} (got {value})", "give seconds, e.g. 86400"
        )
    return float(value)


def _priority_classes(doc: _Doc, raw: Any, present: bool) -> tuple[PriorityClass, ...]:
    if not present:
        return DEFAULT_PRIORITY_CLASSES
    items = _list(doc, raw, ("priority_classes",), non_empty=True)
    classes: list[PriorityClass] = []
    seen: set[str] = set()
    for pi, item in enumerate(items):
        ppath: _PathT = ("priority_classes", pi)
        p = _mapping(doc, item, ppath, _PC_KEYS, "priority class")
        name = _name(doc, p, ppath)
        if name in seen:
            doc.fail((*ppath, "name"), f"duplicate priority class {name!r}", "give each class its own name")
        seen.add(name)
        if "value" not in p:
            doc.fail(ppath, "missing required key 'value'", "add value: <integer, higher runs first>")
        value = p["value"]
        if isinstance(value, bool) or not isinstance(value, int):
            doc.fail((*ppath, "value"), f"must be a whole number (got {value!r})", "write e.g. value: 100")
        preempts = p.get("preempts_lower", True)
        if not isinstance(preempts, bool):
            doc.fail(
                (*ppath, "preempts_lower"), f"must be true or false (got {preempts!r})", "write true or false"
            )
        classes.append(PriorityClass(name=name, value=value, preempts_lower=preempts))
    return tuple(classes)


def _from_validation(doc: _Doc, exc: ValidationError, base: _PathT) -> None:
    err = exc.errors()[0]
    loc = tuple(p for p in err.get("loc", ()) if isinstance(p, str | int))
    doc.fail((*base, *loc), str(err.get("msg", "invalid value")), "fix the value")


# --- public API ----------------------------------------------------------------------------------


def parse_cluster(text: str, source: str = "<string>") -> ClusterConfig:
    """The ClusterConfig a cluster-file text describes; ClusterFileError (one line) if it is wrong."""
    doc = _Doc(text, source)
    data = doc.data
    if data is None:
        doc.fail((), "the file is empty", "describe at least one region with racks")
    top = _mapping(doc, data, (), _TOP_KEYS, "cluster")
    if "regions" not in top:
        doc.fail((), "missing required key 'regions'", "add regions: [{name: ..., racks: [...]}]")
    nodes = _nodes(doc, top["regions"])
    queues = _queues(doc, top.get("queues"))
    classes = _priority_classes(doc, top.get("priority_classes"), "priority_classes" in top)
    try:
        return ClusterConfig(
            nodes=tuple(nodes),
            queues=tuple(queues),
            priority_classes=classes,
            default_time_limit_s=_seconds(doc, top, (), "default_time_limit_s"),
        )
    except ValidationError as exc:  # pragma: no cover - names were checked above
        _from_validation(doc, exc, ())
        raise


def load_cluster(path: str | Path) -> ClusterConfig:
    """Read and check a cluster file (see the module docstring for the format)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClusterFileError(
            _one_line(f"{path}:0: file: cannot read ({exc.strerror or exc}) (check the path)")
        ) from None
    return parse_cluster(text, source=str(path))


def ensure_queues(cluster: ClusterConfig, queue_names: Iterable[str]) -> ClusterConfig:
    """The cluster with a queue for every name in `queue_names` (e.g. a trace's queues).

    Missing queues get equal shares: with n = existing + added queues, each added queue's quota for
    every GPU type is floor(GPUs of that type / n); they share cohort "default" (so they can lend
    each other idle quota) and may borrow without limit. Existing queues are kept as they are, so
    nominal quotas may add up to more than the cluster holds (they are nominal, as in Kueue).
    Returns `cluster` itself when nothing is missing.
    """
    have = {q.name for q in cluster.queues}
    missing = sorted({n for n in queue_names if n not in have})
    if not missing:
        return cluster
    totals: dict[str, int] = {}
    for node in cluster.nodes:
        totals[node.gpu_type] = totals.get(node.gpu_type, 0) + node.gpus
    n = len(cluster.queues) + len(missing)
    share = {gpu_type: total // n for gpu_type, total in sorted(totals.items())}
    added = tuple(Queue(name=name, cohort=DEFAULT_COHORT, quota=dict(share)) for name in missing)
    return cluster.model_copy(update={"queues": (*cluster.queues, *added)})
