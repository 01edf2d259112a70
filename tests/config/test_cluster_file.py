"""The cluster file: parsing, node naming, one-line errors with line numbers, ensure_queues."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.config.cluster_file import ClusterFileError, ensure_queues, load_cluster, parse_cluster
from scheduler.model.queue import DEFAULT_PRIORITY_CLASSES, ClusterConfig, Queue
from scheduler.sim.traces import load_trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SMALL = """\
regions:
  - name: cn-north
    zone: cn-north-1
    racks:
      - {name: r1, nodes: 3, gpu_type: H100, gpus_per_node: 8, nvlink_domain_size: 2}
      - {name: a1, nodes: 1, gpu_type: A100, gpus_per_node: 4}
  - name: eu-west
    racks:
      - {name: r1, nodes: 2, gpu_type: H100, gpus_per_node: 8}
queues:
  - {name: perception, cohort: autopilot, quota: {H100: 16, B200: 8}, borrowing_limit: 8, lending_limit: null}
  - name: research
    quota: {A100: 4}
    weight: 2
"""


def _err(text: str) -> str:
    with pytest.raises(ClusterFileError) as info:
        parse_cluster(text, source="c.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_parse_nodes_and_topology() -> None:
    cluster = parse_cluster(SMALL)
    assert isinstance(cluster, ClusterConfig)
    assert [n.id for n in cluster.nodes] == [
        "cn-north-r1-n00",
        "cn-north-r1-n01",
        "cn-north-r1-n02",
        "cn-north-a1-n00",
        "eu-west-r1-n00",
        "eu-west-r1-n01",
    ]
    first, third, a100, eu = cluster.nodes[0], cluster.nodes[2], cluster.nodes[3], cluster.nodes[4]
    assert (first.region, first.zone, first.rack, first.nvlink_domain) == (
        "cn-north",
        "cn-north-1",
        "cn-north/r1",
        "cn-north/r1/d0",
    )
    assert cluster.nodes[1].nvlink_domain == "cn-north/r1/d0"
    assert third.nvlink_domain == "cn-north/r1/d1"
    assert (a100.gpu_type, a100.gpus, a100.nvlink_domain) == ("A100", 4, "")
    assert (eu.zone, eu.rack) == ("eu-west-a", "eu-west/r1")  # default zone; racks unique per region
    assert cluster.total_gpus == 3 * 8 + 4 + 2 * 8


def test_parse_queues_and_default_priority_classes() -> None:
    cluster = parse_cluster(SMALL)
    perception, research = cluster.queues
    assert perception == Queue(
        name="perception", cohort="autopilot", quota={"H100": 16, "B200": 8}, borrowing_limit=8
    )
    assert research == Queue(name="research", quota={"A100": 4}, weight=2.0)
    assert cluster.priority_classes == DEFAULT_PRIORITY_CLASSES  # a quota for absent B200 is fine


def test_priority_classes_given() -> None:
    text = SMALL + (
        "priority_classes:\n  - {name: batch, value: -5, preempts_lower: false}\n  - {name: prod, value: 7}\n"
    )
    classes = parse_cluster(text).priority_classes
    assert [(p.name, p.value, p.preempts_lower) for p in classes] == [("batch", -5, False), ("prod", 7, True)]


def test_error_bad_value_names_file_line_and_path() -> None:
    text = SMALL.replace(
        "{name: a1, nodes: 1, gpu_type: A100, gpus_per_node: 4}",
        "{name: a1, nodes: 1, gpu_type: A100, gpus_per_node: 0}",
    )
    assert _err(text) == (
        "c.yaml:6: regions[0].racks[1].gpus_per_node: must be ≥ 1 (got 0) (set gpus_per_node to 1 or more)"
    )


def test_error_unknown_key_block_style() -> None:
    text = SMALL.replace("    weight: 2\n", "    wieght: 2\n")
    assert _err(text) == (
        "c.yaml:14: queues[1].wieght: unknown key "
        "(allowed keys: borrowing_limit, cohort, default_time_limit_s, lending_limit, name, quota, weight)"
    )


def test_error_unknown_top_level_key() -> None:
    assert _err(SMALL + "nodes: 3\n").startswith(
        "c.yaml:15: nodes: unknown key (allowed keys: default_time_limit_s, policy, priority_classes"
    )


def test_error_missing_and_wrong_types() -> None:
    assert _err("regions: []\n") == "c.yaml:1: regions: must not be empty (add at least one entry)"
    assert _err("queues: []\n") == (
        "c.yaml:1: (top level): missing required key 'regions' (add regions: [{name: ..., racks: [...]}])"
    )
    text = (
        "regions:\n  - name: x\n    racks:\n      - {name: r, nodes: two, gpu_type: H100, gpus_per_node: 8}\n"
    )
    assert (
        _err(text)
        == "c.yaml:4: regions[0].racks[0].nodes: must be a whole number (got 'two') (write e.g. nodes: 1)"
    )
    text = "regions:\n  - name: x\n    racks:\n      - {name: r, nodes: 2, gpus_per_node: 8}\n"
    assert _err(text).startswith("c.yaml:4: regions[0].racks[0]: missing required key 'gpu_type'")
    assert _err("").startswith("c.yaml:1: (top level): the file is empty")


def test_error_duplicates() -> None:
    text = SMALL.replace("  - name: research", "  - name: perception")
    assert (
        _err(text)
        == "c.yaml:12: queues[1].name: duplicate queue name 'perception' (give each queue its own name)"
    )
    text = "regions:\n  - name: x\n    name: y\n    racks: []\n"
    assert _err(text) == "c.yaml:3: regions[0].name: duplicate key 'name' (keep one of them)"


def test_error_negative_quota_and_limits() -> None:
    text = SMALL.replace("quota: {A100: 4}", "quota: {A100: -4}")
    assert _err(text) == "c.yaml:13: queues[1].quota.A100: must be ≥ 0 (got -4) (set A100 to 0 or more)"
    text = SMALL.replace("borrowing_limit: 8", "borrowing_limit: -1")
    assert _err(text).startswith("c.yaml:11: queues[0].borrowing_limit: must be ≥ 0 (got -1)")
    text = SMALL.replace("weight: 2", "weight: 0")
    assert _err(text) == "c.yaml:14: queues[1].weight: must be > 0 (got 0) (use a positive weight, e.g. 1)"


def test_error_yaml_syntax() -> None:
    message = _err("regions:\n  - name: x\n    racks: [\n")
    assert message.startswith("c.yaml:4: YAML syntax:")


def test_load_cluster_reads_files_and_names_them(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "regions:\n  - name: r\n    racks:\n      - {name: k, nodes: 1, gpu_type: any, gpus_per_node: 8}\n"
    )
    with pytest.raises(
        ClusterFileError, match=r"bad\.yaml:4: regions\[0\]\.racks\[0\]\.gpu_type: 'any' is reserved"
    ):
        load_cluster(path)
    with pytest.raises(ClusterFileError, match=r"nope\.yaml:0: file: cannot read"):
        load_cluster(tmp_path / "nope.yaml")


# --- ensure_queues ---------------------------------------------------------------------------------


def test_ensure_queues_adds_equal_shares() -> None:
    cluster = parse_cluster(SMALL)  # H100: 40 GPUs, A100: 4; 2 queues already
    grown = ensure_queues(cluster, ["research", "zeta", "alpha", "zeta"])
    assert [q.name for q in grown.queues] == ["perception", "research", "alpha", "zeta"]
    assert grown.queues[:2] == cluster.queues  # existing queues untouched
    for q in grown.queues[2:]:
        assert q.quota == {"A100": 1, "H100": 10}  # floor(4 / 4), floor(40 / 4)
        assert (q.cohort, q.borrowing_limit, q.lending_limit) == ("default", None, None)
    assert ensure_queues(cluster, ["perception"]) is cluster


def test_ensure_queues_without_any_queues() -> None:
    text = (
        "regions:\n  - name: x\n    racks:\n      - {name: r, nodes: 7, gpu_type: V100, gpus_per_node: 8}\n"
    )
    cluster = parse_cluster(text)
    assert cluster.queues == ()
    grown = ensure_queues(cluster, ["b", "a", "c"])
    assert [(q.name, q.quota, q.cohort) for q in grown.queues] == [
        ("a", {"V100": 18}, "default"),  # floor(56 / 3)
        ("b", {"V100": 18}, "default"),
        ("c", {"V100": 18}, "default"),
    ]


# --- the example files -----------------------------------------------------------------------------


def test_example_demo_cluster() -> None:
    cluster = load_cluster(EXAMPLES / "cluster.yaml")
    assert cluster.total_gpus == 256
    by_type: dict[tuple[str, str], int] = {}
    for n in cluster.nodes:
        by_type[(n.region, n.gpu_type)] = by_type.get((n.region, n.gpu_type), 0) + n.gpus
    assert by_type == {("cn-north", "H100"): 128, ("cn-north", "A100"): 64, ("eu-west", "H100"): 64}
    assert {q.name: q.cohort for q in cluster.queues} == {
        "perception": "autopilot",
        "planning": "autopilot",
        "research": "lab",
    }
    assert [p.name for p in cluster.priority_classes] == ["low", "normal", "high"]
    demo = load_trace(EXAMPLES / "traces" / "demo.csv")
    assert ensure_queues(cluster, demo.queues) is cluster  # the demo trace needs no extra queues


def test_example_philly_cluster_is_sized_from_the_trace() -> None:
    cluster = load_cluster(EXAMPLES / "philly-cluster.yaml")
    assert cluster.gpu_types == frozenset({"V100"})
    assert cluster.total_gpus == 448
    assert cluster.queues == ()
    sample = load_trace(EXAMPLES / "traces" / "philly_sample.csv")
    grown = ensure_queues(cluster, sample.queues)
    assert {q.name for q in grown.queues} == set(sample.queues)


def test_node_labels_follow_the_kubernetes_label_syntax() -> None:
    rack = "regions: [{name: a, racks: [{name: r, nodes: 1, gpu_type: H, gpus_per_node: 8, labels: %s}]}]"
    cluster = parse_cluster(rack % "{team: vision, corral.dev/pool: x1, empty: ''}", "c.yaml")
    assert cluster.nodes[0].labels == {"team": "vision", "corral.dev/pool": "x1", "empty": ""}
    assert "'bad key' is not a label key" in _err(rack % '{"bad key": 1}')
    assert "'v v' is not a label value" in _err(rack % '{k: "v v"}')
    assert "is not a label key" in _err(rack % "{a/b/c: 1}")
    assert "\x1b" not in _err(rack % '{k: "\\e[2J"}')
