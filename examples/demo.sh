#!/usr/bin/env bash
# One command from a fresh clone: install Corral into .venv, bring up the embedded local cluster
# (a Ray cluster of 4 simulated 8-GPU nodes in regions cn-north and cn-east, the controller with
# SQLite and the API on localhost), then run a small workload through it that shows a gang job,
# data residency, a preemption with checkpoint and resume, and a pending reason.
# Watch it with `corral jobs -w`; stop everything with `corral down`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
export PATH="$PWD/.venv/bin:$PATH"

corral up
# Jobs run in the directory they are submitted from. As root, Corral runs them as the unprivileged
# user corral-job, who may not be able to enter this checkout (e.g. under /root): submit from a
# copy of the example jobs that every user can read.
repo=$PWD
jobs_dir=$(mktemp -d /tmp/corral-demo-XXXXXX)
mkdir -p "$jobs_dir/examples" && cp -r examples/jobs "$jobs_dir/examples/" && chmod -R a+rX "$jobs_dir"
cd "$jobs_dir"
train="python3 examples/jobs/checkpoint_train.py"
say() { printf '\n== %s\n' "$*" >&2; }

say "a 2-node x 8-GPU gang whose data must stay in cn-north"
corral submit examples/jobs/train-gang.yaml
say "two low-priority 8-GPU jobs fill cn-east; they checkpoint on SIGTERM"
for i in 1 2; do
  corral submit --name "sweep-$i" --priority low --gpus 8 --region cn-east --grace 10 -- $train --steps 90
done
sleep 8
say "an urgent high-priority job for cn-east preempts one of them (it checkpoints, requeues, resumes later)"
corral submit --name urgent --priority high --gpus 8 --region cn-east -- $train --steps 20
say "a 1-GPU job pinned to cn-north waits: its region is full (see REASON)"
corral submit --name eval --gpus 1 --region cn-north --time 10m -- $train --steps 10
for _ in 1 2 3; do sleep 5; corral jobs; echo; done

cat >&2 <<MSG
The workload keeps running for a minute or two. Try (from $repo):
  .venv/bin/corral jobs -w            # watch states and reasons (Ctrl-C to stop)
  .venv/bin/corral describe 2         # (or 3, whichever was preempted) history and audit trail
  .venv/bin/corral logs 2 -f          # "checkpoint saved" / "resumed from checkpoint"
  .venv/bin/corral queues; .venv/bin/corral nodes
  .venv/bin/corral down               # stop the local cluster and the controller
MSG
