"""A long chaos run: python -m tests.chaos --soak MINUTES --seed S [--store postgresql|sqlite]
[--burst 5000]. Prints the counts as JSON; exits 1 if any invariant was broken."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.harness import ChaosRun


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--soak", type=float, default=30.0, help="minutes of faults (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--burst", type=int, default=5000, help="submissions in one burst fault")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="corral-chaos-"))
    run = ChaosRun(home, args.seed, store=args.store, burst=args.burst, say=lambda m: print(m, flush=True))
    t0 = time.monotonic()
    try:
        run.start()
        counts = run.run(args.soak * 60)
    finally:
        run.close()
    report = {"seed": args.seed, "store": args.store, "minutes": round((time.monotonic() - t0) / 60, 1)}
    report |= counts.as_dict()
    print(json.dumps(report, indent=2))
    return 0 if counts.clean else 1


if __name__ == "__main__":
    sys.exit(main())
