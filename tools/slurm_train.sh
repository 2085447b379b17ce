#!/usr/bin/env bash
# Slurm training: GPUS=8 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [tools/train.py args...]
exec bash "$(dirname "${BASH_SOURCE[0]}")/slurm_run.sh" train "$@"
