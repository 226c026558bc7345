#!/usr/bin/env bash
# Fill .whl/ (ignored) with the wheels scripts/gpu_check.sh installs on the device machine, which reaches no
# package registry: the six segcore distributions, built from this tree (pip wheel --no-deps, hatchling from the
# dev venv), and the third-party packages its image lacks (KINDS.md "Python packages already there"): `datasets`
# (needed by segcore-datasets) and its two missing needs, dill and multiprocess, for CPython 3.12 on x86-64.
# The device already has torch, timm, transformers, accelerate, pluggy, safetensors, huggingface_hub, scipy,
# pyarrow, pandas, fsspec, xxhash: none of those is carried. Everything here is pure Python, about 1 MB.
#
# Usage (repository root): bash scripts/gpu_wheels.sh        PYTHON=... to use another interpreter with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
WHL=.whl
# Versions that the dev venv resolved (datasets 5.2.0 wants dill <0.4.2, multiprocess <0.70.20).
THIRD_PARTY=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)

rm -rf "$WHL"
mkdir -p "$WHL"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" "${THIRD_PARTY[@]}"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WHL" \
  ./packages/core ./packages/datasets ./cli ./packages/segnext ./packages/segvit ./packages/segdeformer
# What gpu_check.sh records in its JSON: which tree the segcore wheels were built from.
echo "$(git rev-parse --short HEAD)$(git status --porcelain --untracked-files=no | grep -q . && echo -dirty) $(date -u +%FT%TZ)" \
  >"$WHL/SOURCE"
ls -l "$WHL"
du -sh "$WHL"
