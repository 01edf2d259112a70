#!/usr/bin/env bash
# Install Corral into .venv and replay the demo trace on the demo
# cluster under every policy (FIFO, SJF, Tiresias-LAS and Corral's default), with a plot.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/corral sim --cluster examples/cluster.yaml --trace examples/traces/demo.csv \
  --policy fifo,sjf,las,corral --plot demo.png --events-out demo-events.jsonl
echo "Next: .venv/bin/corral sim --help   (the plot is in demo.png, every allocation in demo-events.jsonl)" >&2
