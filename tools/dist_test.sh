#!/usr/bin/env bash
# Multi-process test: bash tools/dist_test.sh CONFIG NPROC [tools/test.py args...]
exec bash "$(dirname "${BASH_SOURCE[0]}")/dist_run.sh" test "$@"
