#!/usr/bin/env bash
# Sets up one node of a cluster launched from aws-gpu.yaml or ray-local.yaml (their setup_commands run it, from
# the checkout they copy to ~/vad-sweeps): Python 3.11 in ~/venv (uv), a CUDA build of torch, then this project
# with ray[default,tune,train]; ~/venv goes first on PATH for every later command (Ray runs them in a login shell,
# so `ray start` and a job's `python` are the venv's). Idempotent: `ray up` reruns it on every update.
#     TORCH_INDEX=https://download.pytorch.org/whl/cu126 bash cluster/setup-node.sh   # another CUDA build
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
uv=~/.local/bin/uv
[ -x "$uv" ] || curl -LsSf https://astral.sh/uv/install.sh | sh
[ -x ~/venv/bin/python ] || "$uv" venv --python 3.11 ~/venv
grep -q 'venv/bin/activate' ~/.bashrc || echo 'source ~/venv/bin/activate' >> ~/.bashrc
"$uv" pip install --python ~/venv/bin/python torch --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu124}"
"$uv" pip install --python ~/venv/bin/python -e "$repo"
