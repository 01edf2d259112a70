"""One PNG for `corral whatif --plot`: per queue, baseline beside changed (wait p50/p95, GPUs held)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANELS = (
    ("wait_p50_s", "wait p50 (h)", 1 / 3600),
    ("wait_p95_s", "wait p95 (h)", 1 / 3600),
    ("gpu_allocation", "GPUs held (average)", 1.0),
    ("fair_share_ratio", "fair-share ratio", 1.0),
)


def plot_whatif(result: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    queues = sorted(set(result["baseline"]["queues"]) | set(result["changed"]["queues"]))
    settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in result["changed"].get("settings", {}).items())
    fig = Figure(figsize=(4 * len(PANELS), 4), layout="constrained")
    FigureCanvasAgg(fig)
    x = np.arange(len(queues), dtype=np.float64)
    for i, (key, label, scale) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), i + 1)
        for offset, side, name in ((-0.2, "baseline", "current"), (0.2, "changed", "changed")):
            values = [(result[side]["queues"].get(q, {}).get(key) or 0.0) * scale for q in queues]
            ax.bar(x + offset, values, width=0.4, label=name)
        ax.set_xticks(x, queues, rotation=30, ha="right")
        ax.set_title(label)
        if i == 0:
            ax.legend()
    fig.suptitle(f"corral whatif {settings}")
    fig.savefig(os.fspath(path), dpi=100)
