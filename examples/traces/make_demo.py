"""Write examples/traces/demo.csv: a synthetic, contended workload for examples/cluster.yaml.

Deterministic (seeded), so running it again gives the same file:

    python examples/traces/make_demo.py            # rewrites demo.csv next to this script
    python examples/traces/make_demo.py --check    # exits 1 if demo.csv differs from the output

The mix: three queues (perception, planning: cohort autopilot; research: cohort lab), priorities
low/normal/high, H100 and A100 jobs pinned to cn-north or eu-west or free to run anywhere, 1-8 GPU
jobs and 2-4 node gangs of 8 GPUs, heavy-tailed (log-normal) durations from minutes to hours,
time limits on most jobs (a few too short, so those jobs hit their limit and end TIMEOUT).
Only standard-library code, so it runs without Corral installed.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

SEED = 20240601
JOBS = 200
MEAN_INTERARRIVAL_S = 150.0
CAPACITY_GPUS = 256  # examples/cluster.yaml: 128 + 64 H100 and 64 A100

HEADER = (
    "job_id",
    "submit_time",
    "duration",
    "gpus",
    "queue",
    "priority",
    "gpu_type",
    "data_region",
    "time_limit",
    "nodes",
    "gpus_per_node",
    "preemptible",
)

# queue: (share of jobs, GPU-count weights, priority weights low/normal/high, gpu_type weights)
QUEUES: dict[str, tuple[float, dict[int, float], tuple[float, float, float], dict[str, float]]] = {
    "perception": (
        0.45,
        {1: 0.08, 2: 0.07, 4: 0.15, 8: 0.30, 16: 0.18, 24: 0.07, 32: 0.15},
        (0.10, 0.70, 0.20),
        {"H100": 0.75, "A100": 0.05, "any": 0.20},
    ),
    "planning": (
        0.30,
        {1: 0.15, 2: 0.10, 4: 0.20, 8: 0.30, 16: 0.15, 24: 0.05, 32: 0.05},
        (0.15, 0.70, 0.15),
        {"H100": 0.60, "A100": 0.15, "any": 0.25},
    ),
    "research": (
        0.25,
        {1: 0.25, 2: 0.15, 4: 0.20, 8: 0.25, 16: 0.10, 32: 0.05},
        (0.50, 0.45, 0.05),
        {"H100": 0.30, "A100": 0.45, "any": 0.25},
    ),
}
REGIONS = {"cn-north": 0.45, "eu-west": 0.20, "any": 0.35}

K = TypeVar("K")


def _pick(rng: random.Random, weights: Mapping[K, float]) -> K:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def generate(seed: int = SEED, jobs: int = JOBS) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    t = 0.0
    names = list(QUEUES)
    for i in range(jobs):
        t += rng.expovariate(1.0 / MEAN_INTERARRIVAL_S)
        queue = rng.choices(names, weights=[QUEUES[q][0] for q in names])[0]
        _, sizes, prio_w, types = QUEUES[queue]
        gpus = _pick(rng, sizes)
        priority = rng.choices(("low", "normal", "high"), weights=prio_w)[0]
        gpu_type = _pick(rng, types)
        region = _pick(rng, REGIONS)
        if gpu_type == "A100" and region == "eu-west":  # no A100 in eu-west: keep the job feasible
            region = "cn-north"
        # heavy tail: log-normal, median 45 min, clipped to 3 min .. 12 h
        duration = min(12 * 3600.0, max(180.0, rng.lognormvariate(math.log(2700.0), 1.0)))
        duration = float(round(duration))
        u = rng.random()
        if u < 0.15:
            time_limit = ""  # no limit
        elif u < 0.18:  # a limit shorter than the job: it will be stopped (TIMEOUT)
            time_limit = str(int(math.ceil(duration * rng.uniform(0.5, 0.9) / 60.0) * 60))
        else:  # a generous limit, rounded up to 15 minutes, as users write them
            time_limit = str(int(math.ceil(duration * rng.uniform(1.1, 3.0) / 900.0) * 900))
        preemptible = "false" if priority == "high" and rng.random() < 0.3 else "true"
        nodes, per_node = (gpus // 8, 8) if gpus > 8 else (1, gpus)
        rows.append(
            {
                "job_id": f"demo-{i:04d}",
                "submit_time": str(round(t)),
                "duration": str(int(duration)),
                "gpus": str(gpus),
                "queue": queue,
                "priority": priority,
                "gpu_type": gpu_type,
                "data_region": region,
                "time_limit": time_limit,
                "nodes": str(nodes) if nodes > 1 else "",
                "gpus_per_node": str(per_node) if nodes > 1 else "",
                "preemptible": preemptible,
            }
        )
    return rows


def render(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def summary(rows: list[dict[str, str]]) -> str:
    gpu_s = sum(int(r["duration"]) * int(r["gpus"]) for r in rows)
    span = max(int(r["submit_time"]) for r in rows) - min(int(r["submit_time"]) for r in rows)
    demand = gpu_s / span
    return (
        f"{len(rows)} jobs over {span / 3600:.1f} h, {gpu_s / 3600:.0f} GPU-hours, "
        f"average demand {demand:.0f} GPUs = {demand / CAPACITY_GPUS:.2f}x the {CAPACITY_GPUS}-GPU cluster"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("demo.csv"))
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from the output")
    args = parser.parse_args(argv)
    rows = generate()
    text = render(rows)
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {summary(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
