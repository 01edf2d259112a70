#!/usr/bin/env python3
"""A stand-in training job that checkpoints: what a preemptible Corral job looks like.

It "trains" for --steps steps of --step-s seconds. On start it resumes from the last checkpoint in
$CORRAL_CHECKPOINT_DIR; on SIGTERM (Corral's preemption or cancel notice) it saves the step it
reached and exits 0 within the grace period. A real job does the same with torch.save/torch.load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--step-s", type=float, default=0.5)
    args = parser.parse_args()

    rank = int(os.environ.get("RANK", "0"))
    ckpt_dir = Path(os.environ.get("CORRAL_CHECKPOINT_DIR", "checkpoints"))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / f"rank{rank}.json"
    step = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    restarts = os.environ.get("CORRAL_RESTART_COUNT", "0")
    print(f"start: step {step} of {args.steps} (restart {restarts}, rank {rank})", flush=True)
    if step:
        print(f"resumed from checkpoint at step {step}", flush=True)

    def save_and_exit(signum: int, _frame: object) -> None:
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step}))
        tmp.replace(ckpt)  # atomic: a half-written checkpoint is never read
        print(f"SIGTERM: checkpoint saved at step {step}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, save_and_exit)
    while step < args.steps:
        time.sleep(args.step_s)
        step += 1
        if step % 10 == 0:
            print(f"step {step}", flush=True)
    ckpt.write_text(json.dumps({"step": step}))
    print(f"done: {step} steps", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
