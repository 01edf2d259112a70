#!/usr/bin/env python3
"""A real PyTorch DistributedDataParallel job that Corral can preempt and resume.

It trains a tiny linear regression on synthetic data with `torch.distributed` (gloo on CPU, NCCL
where a GPU is visible), one process per node as Corral launches it. It relies only on PyTorch's
`env://` rendezvous: Corral sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for each rank (run
alone, outside Corral, it is a world of one on 127.0.0.1).

Preemption, the way a real job does it:
- SIGTERM (Corral's preemption, cancel or time-limit notice) only sets a flag;
- before every step the ranks agree on that flag (all_reduce with MAX), so all of them stop at the
  same step even when their SIGTERMs land a step apart;
- rank 0 saves {step, model, optimizer} to $CORRAL_CHECKPOINT_DIR atomically (a temporary file,
  fsync, rename), every rank waits for it at a barrier and exits 0 within the grace period;
- on start every rank loads the checkpoint, if there is one, and resumes from its step. Across
  nodes the checkpoint directory must be shared storage (pass --checkpoint-dir or the job's
  `checkpoint_dir`); on one machine, Corral's default per-job directory does.

The batch of each step is generated from the step and the rank, so a run that was preempted and
resumed ends with the same parameters, to the bit, as one that never stopped. Every rank prints a
digest of its parameters on resume, on a stop and at the end: DDP keeps the replicas identical, so
the digests of all ranks agree.

    corral submit -N 2 --gpus-per-node 8 --region cn-north --grace 30 -- \\
        python3 examples/jobs/ddp_train.py --steps 200
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

CHECKPOINT = "ddp_train.pt"
FEATURES = 16
BATCH = 64

_stop_requested = False


def _on_sigterm(signum: int, _frame: object) -> None:
    # Only a flag: the training loop decides, together with the other ranks, where to stop.
    global _stop_requested
    _stop_requested = True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200, help="train until this step (default 200)")
    parser.add_argument(
        "--step-s", type=float, default=0.25, help="pause after each step, to make it last (default 0.25)"
    )
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument(
        "--checkpoint-dir",
        default=os.environ.get("CORRAL_CHECKPOINT_DIR", "checkpoints"),
        help="where the checkpoint lives (default: $CORRAL_CHECKPOINT_DIR, else ./checkpoints)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # Before importing torch (seconds): a notice that arrives while the job starts is not lost.
    signal.signal(signal.SIGTERM, _on_sigterm)
    args = parse_args(argv)

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    # Outside Corral (or torchrun): a world of one.
    for key, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, default)
    os.environ.setdefault("MASTER_PORT", "29500")
    torch.set_num_threads(1)  # a tiny model: threads would only fight the other ranks for cores

    use_cuda = torch.cuda.is_available()
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    say(f"joined: rank {rank} of {world}, backend {dist.get_backend()}, device {device}")

    torch.manual_seed(0)  # the same initial parameters on every rank (DDP broadcasts rank 0's anyway)
    model = torch.nn.Linear(FEATURES, 1).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    ckpt = Path(args.checkpoint_dir) / CHECKPOINT
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        say(f"resumed from checkpoint at step {step}: params {digest(model)}")
    else:
        say(f"no checkpoint in {ckpt.parent}: starting at step 0")
    ddp = DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    true_w = torch.linspace(-1.0, 1.0, FEATURES, device=device).unsqueeze(1)

    flag = torch.zeros(1, dtype=torch.int32, device=device)
    stopped = False
    while step < args.steps:
        flag.fill_(1 if _stop_requested else 0)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # stop when any rank was told to
        if flag.item():
            stopped = True
            break
        x, y = batch(step, rank, world, true_w)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        loss.backward()  # DDP averages the gradients of all ranks here
        optimizer.step()
        step += 1
        say(f"step {step} loss {loss.item():.6f}")
        time.sleep(args.step_s)

    if stopped:
        say(f"SIGTERM: stopping at step {step}")
    if rank == 0:
        save(ckpt, {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()})
        say(f"checkpoint saved at step {step}" + (" (SIGTERM)" if stopped else " (final)"))
    dist.barrier()  # nobody leaves before the checkpoint is on disk
    say(f"{'stopped' if stopped else 'done'} at step {step}: params {digest(model)}")
    dist.destroy_process_group()
    return 0


def batch(step: int, rank: int, world: int, true_w: Any) -> tuple[Any, Any]:
    """This rank's shard of the step's batch: the same numbers whenever the step is run."""
    import torch

    gen = torch.Generator().manual_seed(step * world + rank)
    x = torch.randn(BATCH, FEATURES, generator=gen)
    noise = 0.01 * torch.randn(BATCH, 1, generator=gen)
    x, noise = x.to(true_w.device), noise.to(true_w.device)
    return x, x @ true_w + 0.5 + noise


def save(path: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint so that a reader sees the old one or the new one, never half of one."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def digest(model: Any) -> str:
    """A short hash of the exact values of the parameters (repr of a float is exact)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(repr(p.detach().cpu().double().flatten().tolist()).encode())
    return h.hexdigest()[:16]


def say(message: str) -> None:
    print(message, flush=True)  # Corral prefixes each line of a gang's log with "[rank R] "


if __name__ == "__main__":
    sys.exit(main())
