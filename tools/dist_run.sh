#!/usr/bin/env bash
# Run tools/TOOL.py in NPROC processes per node (mm style): GPUs with NCCL, CPUs with Gloo.
#   bash tools/dist_run.sh TOOL CONFIG NPROC [tool args...]      (TOOL: test, train)
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node.
set -euo pipefail
TOOL=$1
CONFIG=$2
NPROC=$3
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# the repository's venv (tools/setup.sh) unless PYTHON names another interpreter
default_py=python; [ -x "$here/../.venv/bin/python" ] && default_py="$here/../.venv/bin/python"
"${PYTHON:-$default_py}" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" "$here/$TOOL.py" "$CONFIG" --launcher pytorch "${@:4}"
