"""The live controller's configuration: one cluster file (nodes, queues, priority classes, policy).

The same file format as the simulator's (scheduler/config/cluster_file.py) plus an optional `policy:`
mapping of PolicyConfig fields, so a policy measured in the simulator ships unchanged. The knobs
follow the simulator's precedence (scheduler/config/policy.py): the file < CORRAL_POLICY_* env.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scheduler.config.cluster_file import ClusterFileError, parse_cluster
from scheduler.config.policy import PolicyConfigError, resolve_policy
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import PolicyConfig


@dataclass(frozen=True, slots=True)
class LiveConfig:
    cluster: ClusterConfig
    policy: PolicyConfig
    source: str


def parse_live_config(text: str, source: str = "<string>") -> LiveConfig:
    """Cluster and policy from one file; ClusterFileError (one line) on any mistake."""
    cluster = parse_cluster(text, source)
    raw: Any = (yaml.safe_load(text) or {}).get("policy") or {}
    if not isinstance(raw, dict):
        raise ClusterFileError(f"{source}: policy: must be a mapping of policy settings")
    try:
        policy = resolve_policy(raw, source, where="policy.")
    except PolicyConfigError as exc:
        raise ClusterFileError(f"{exc} (see PolicyConfig in scheduler/policy/config.py)") from None
    return LiveConfig(cluster=cluster, policy=policy, source=source)


def load_live_config(path: str | Path) -> LiveConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClusterFileError(f"{path}: cannot read ({exc.strerror or exc}) (check the path)") from None
    return parse_live_config(text, source=str(path))


def default_cluster_yaml(
    nodes: int = 4,
    gpus_per_node: int = 8,
    regions: Sequence[str] = ("cn-north", "cn-east"),
    racks: int = 2,
    gpu_type: str = "H100",
) -> str:
    """The embedded default `corral up` writes: `nodes` spread evenly over regions, then racks.

    Priority classes low/normal/high and one queue `default` owning every GPU, so a new user can
    submit at once. Preemption protection is short (10 s) so a demo shows it within a minute.
    """
    if nodes < 1 or gpus_per_node < 1 or racks < 1 or not regions:
        raise ValueError("need at least one node, one GPU per node, one rack and one region")
    lines = [
        "# Corral local cluster (written by `corral up`; edit and pass it back with --config).",
        "regions:",
    ]
    for ri, region in enumerate(regions):
        in_region = nodes // len(regions) + (1 if ri < nodes % len(regions) else 0)
        if in_region == 0:
            continue
        lines += [f"  - name: {region}", "    racks:"]
        for k in range(racks):
            in_rack = in_region // racks + (1 if k < in_region % racks else 0)
            if in_rack:
                lines.append(
                    f"      - {{name: r{k + 1}, nodes: {in_rack}, gpu_type: {gpu_type}, "
                    f"gpus_per_node: {gpus_per_node}, nvlink_domain_size: {in_rack}, cpus: 2, memory_gb: 16}}"
                )
    total = nodes * gpus_per_node
    lines += [
        "queues:",
        f"  - {{name: default, cohort: default, quota: {{{gpu_type}: {total}}}}}",
        "priority_classes:",
        "  - {name: low, value: 0, preempts_lower: false}",
        "  - {name: normal, value: 100}",
        "  - {name: high, value: 1000}",
        "policy:",
        "  default_min_runtime_s: 10   # a new start is safe from preemption this long",
        "",
    ]
    return "\n".join(lines)
