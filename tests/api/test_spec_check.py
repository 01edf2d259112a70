"""check_spec on its own: the same answers from a node list and from a NodeIndex."""

from __future__ import annotations

import pytest

from scheduler.config.cluster_file import parse_cluster
from scheduler.control.spec_check import NodeIndex, check_spec
from scheduler.model.job import JobSpec
from scheduler.view import SpecError
from tests.api.harness import CLUSTER_YAML

CLUSTER = parse_cluster(CLUSTER_YAML)

CASES = [
    ({"queue": "ml-a"}, None),
    ({"queue": "ml-a", "nodes": 2, "gpus_per_node": 8, "gpu_type": "H100", "data_region": "eu-west"}, None),
    ({"queue": "nope"}, "queue"),
    ({"queue": "ml-a", "priority": "urgent"}, "priority"),
    ({"queue": "ml-a", "gpu_type": "V100"}, "gpu_type"),
    ({"queue": "ml-a", "data_region": "mars"}, "data_region"),
    ({"queue": "ml-a", "gpu_type": "A100", "data_region": "eu-west"}, "gpu_type"),
    ({"queue": "ml-a", "gpus_per_node": 9}, "gpus_per_node"),
    ({"queue": "ml-a", "nodes": 2, "gpus_per_node": 8, "gpu_type": "A100"}, "nodes"),
    ({"queue": "ml-a", "nodes": 3, "gpus_per_node": 8}, "nodes"),
]


@pytest.mark.parametrize(("spec", "field"), CASES)
def test_check_spec(spec: dict[str, object], field: str | None) -> None:
    job = JobSpec.model_validate(spec)
    for nodes in (CLUSTER.nodes, NodeIndex.build(CLUSTER.nodes)):
        if field is None:
            check_spec(job, nodes, CLUSTER.queues, CLUSTER.priority_classes)
        else:
            with pytest.raises(SpecError) as exc:
                check_spec(job, nodes, CLUSTER.queues, CLUSTER.priority_classes)
            assert exc.value.field == field and "\n" not in str(exc.value)
