"""Reproduce, with Ray alone, the GPU reservation Ray keeps when placement groups are removed while
others are being placed: `python -m tests.chaos.ray_leak [--rounds N] [--seed S]`.

A local Ray cluster of four 8-GPU nodes (Corral's labels, no Corral running); each round creates 40
placement groups pinned to nodes by label, as Corral's backend does (some cannot be placed yet),
removes a few of them at random moments, then removes the rest; 3 s later every node should have all
its GPUs free again. It prints each round's free GPUs per node; at the first round where Ray counts
GPUs in use that no placement group holds, it looks again 60 s later and exits 1 if they are still
held (0 if no round left any).
The chaos suite met this once in CI (`corral check`: gpus_outside_placement_groups); Corral places
as if such GPUs were taken (README, "Corral and Ray agree on free GPUs").
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from scheduler.backends.ray_state import free_gpus
from scheduler.local.ray_cluster import LABEL_NODE
from tests.builders import node
from tests.raycluster import running_cluster

GPUS = 8


def free_by_node() -> dict[str, float]:
    alive = {
        str(i["NodeID"]): i["Labels"][LABEL_NODE]
        for i in ray.nodes()
        if i["Alive"] and LABEL_NODE in i["Labels"]
    }
    return dict(sorted(free_gpus(alive, 10.0).items()))


def one_round(rng: random.Random, node_ids: list[str], tag: int) -> None:
    groups: list[PlacementGroup] = []
    for k in range(40):
        chosen = rng.sample(node_ids, rng.choice([1, 2]))
        gpus = rng.choice([1, 2, 4])
        groups.append(
            placement_group(
                [{"GPU": gpus}] * len(chosen),
                strategy="STRICT_SPREAD",
                lifetime="detached",
                name=f"leak-{tag}-{k}",
                bundle_label_selector=[{LABEL_NODE: n} for n in chosen],
            )
        )
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0.0, 0.05))
        if rng.random() < 0.3:
            remove_placement_group(groups.pop(rng.randrange(len(groups))))
    time.sleep(rng.uniform(0.0, 0.3))
    for group in groups:
        remove_placement_group(group)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    nodes = [node(f"n0{i}", region="r1", gpus=GPUS) for i in range(1, 5)]
    with running_cluster(nodes, "rayleak") as cluster:
        ray.init(address=cluster.address, namespace="rayleak", log_to_driver=False)
        try:
            for round_ in range(args.rounds):
                one_round(rng, [n.id for n in nodes], round_)
                time.sleep(3.0)
                free = free_by_node()
                live = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
                print(
                    f"round {round_}: free GPUs {free}, placement groups not removed: {len(live)}", flush=True
                )
                if not live and any(f < GPUS for f in free.values()):
                    time.sleep(60.0)  # not a moment of clean-up: it lasts
                    held = {n: GPUS - f for n, f in free_by_node().items() if f < GPUS}
                    print(f"60 s later Ray still holds {held} GPUs with every placement group removed")
                    return 1 if held else 0
        finally:
            ray.shutdown()
    print(f"no GPU held after {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
