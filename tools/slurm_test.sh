#!/usr/bin/env bash
# Slurm test: GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG [tools/test.py args...]
exec bash "$(dirname "${BASH_SOURCE[0]}")/slurm_run.sh" test "$@"
