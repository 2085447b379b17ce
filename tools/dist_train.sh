#!/usr/bin/env bash
# Multi-process training: bash tools/dist_train.sh CONFIG NPROC [tools/train.py args...]
exec bash "$(dirname "${BASH_SOURCE[0]}")/dist_run.sh" train "$@"
