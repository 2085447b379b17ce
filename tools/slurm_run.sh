#!/usr/bin/env bash
# Run tools/TOOL.py under Slurm (mm style): one task per GPU, or per CPU worker (Gloo) with GPUS=0.
#   GPUS=8 bash tools/slurm_run.sh TOOL PARTITION JOB_NAME CONFIG [tool args...]
set -euo pipefail
TOOL=$1
PARTITION=$2
JOB_NAME=$3
CONFIG=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TASKS=${TASKS:-$GPUS}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# the repository's venv (tools/setup.sh) unless PYTHON names another interpreter
default_py=python; [ -x "$here/../.venv/bin/python" ] && default_py="$here/../.venv/bin/python"
gres=(); [ "$GPUS" -gt 0 ] && gres=(--gres="gpu:${GPUS_PER_NODE}")
srun -p "$PARTITION" --job-name="$JOB_NAME" "${gres[@]}" --ntasks="$TASKS" \
  --ntasks-per-node="${TASKS_PER_NODE:-$GPUS_PER_NODE}" --cpus-per-task="${CPUS_PER_TASK:-5}" \
  --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "${PYTHON:-$default_py}" -u "$here/$TOOL.py" "$CONFIG" --launcher slurm "${@:5}"
