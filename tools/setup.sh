#!/usr/bin/env bash
# Set up densekit on a fresh machine (Python 3.11, x86_64, CPU only).
#
#   bash tools/setup.sh            # create/refresh the venv, link it as ./.venv
#
# The venv lives outside the repo, keyed by a hash of requirements.txt, so fresh clones
# reuse it; mmcv 2.1.0 is built once from its sdist (with ops, C++20 patch) and the wheel
# is cached under $DENSEKIT_CACHE/wheels. Override the cache with DENSEKIT_CACHE=...
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${DENSEKIT_CACHE:-$HOME/.cache/densekit}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
key="$( (cat "$here/requirements.txt"; "$py" --version; uname -m) | sha1sum | cut -c1-12)"
venv="$cache/venv-$key"
log() { printf '[setup] %s\n' "$*" >&2; }

mkdir -p "$cache/wheels"
# Headless Chromium + its driver for the web demo's browser test (Debian packages).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  log "installing chromium and chromium-driver (apt)"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq \
    chromium chromium-driver >/dev/null
fi
if [ ! -f "$venv/.complete" ]; then
  log "creating venv $venv (first run: several minutes, mmcv build ~8 min)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "pip<26.2"
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
  torch_ver="$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
  whl_dir="$cache/wheels/torch-$torch_ver"
  if ! ls "$whl_dir"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "building mmcv 2.1.0 with ops against torch $torch_ver"
    tmp="$(mktemp -d)"
    "$venv/bin/pip" download -q --no-deps --no-build-isolation --no-binary :all: mmcv==2.1.0 -d "$tmp"
    tar -xzf "$tmp"/mmcv-2.1.0.tar.gz -C "$tmp"
    # torch >= 2.10 headers need C++20; the sdist hard-codes C++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$tmp/mmcv-2.1.0/setup.py"
    mkdir -p "$whl_dir"
    (cd "$tmp/mmcv-2.1.0" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
      "$venv/bin/pip" wheel -q --no-build-isolation --no-deps . -w "$tmp/out")
    mv "$tmp"/out/mmcv-2.1.0-*.whl "$whl_dir/"
    rm -rf "$tmp"
  fi
  "$venv/bin/pip" install -q --no-deps "$whl_dir"/mmcv-2.1.0-*.whl
  "$venv/bin/pip" install -q -r "$here/requirements.txt"  # resolve mmcv's own deps
  touch "$venv/.complete"
fi
# Cheap every time: (re)point the editable install at this clone.
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$here"
ln -sfn "$venv" "$here/.venv"
"$here/.venv/bin/python" -c 'import mmcv.ops, mmseg.models, mmdet.models, open_clip, densekit' \
  || { log "import check failed"; exit 1; }
log "ready: $here/.venv"
