#!/usr/bin/env bash
# The one command of a GPU check run (issue #19): install the carried wheels, then scripts/gpu_check.py runs
# every step (pytest -m gpu, throughput vs SegFormer-B2, SegNeXt training steps, SegDeformer attention,
# torch.compile), each under a time cap, and writes gpu_check.json, gpu_check.log, pytest.log and attention.md
# to $OUT (default: ./gpu_check_out).
#
# Before the device call, here (network): bash scripts/gpu_wheels.sh     (fills the ignored .whl/, about 1 MB)
# The device call (run tool), from the repository root of the checkout that the session sends, which must hold
# this script (the tool sends the session's own checkout, not a helper's worktree):
#     command:   bash scripts/gpu_check.sh
#     carry:     [".whl"]
#     timeout_s: 510      (the driver's deadline is 450 s; the wheel install and python's start fit in the rest)
# Machine start (1-2 min) + 510 s leaves about 4 minutes of the 15 for one re-run, at once while the machine is
# still warm (30 s), of the steps that failed or timed out, with a deadline to match, e.g.:
#     command:   bash scripts/gpu_check.sh --steps compile --deadline 180     timeout_s: 220, same carry
# Each call's $OUT starts empty and its files come back to a new folder here: the first run's are kept.
#
# Rehearsal on CPU, every step tiny (about 4 minutes on 2 cores), as the device would run it:
#     PYTHON=.venv/bin/python OUT=/tmp/gpu-rehearsal bash scripts/gpu_check.sh --tiny
# Options after the script's name go to scripts/gpu_check.py (--tiny, --steps ..., --deadline S);
# GPU_CHECK_TINY=1 is the same as --tiny.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$ROOT/gpu_check_out}
SITE=${GPU_CHECK_SITE:-/tmp/site}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: >"$LOG"

# Install every carried wheel without its dependencies (the device has the rest) into $SITE. They bring the
# dist-info whose entry points register the segcore plugins; the sources below come first on the path, so the
# code that runs is this tree's even if the wheels were built from an older one.
# Two installs: segcore's own wheels first, so that a third-party wheel this interpreter refuses (the CPU
# rehearsal's Python is not the device's 3.12) cannot keep the plugins from registering.
if compgen -G ".whl/segcore*.whl" >/dev/null; then
  echo "installing $(ls .whl/*.whl | wc -l) wheels into $SITE (segcore built from $(cat .whl/SOURCE 2>/dev/null))" \
    | tee -a "$LOG"
  pip_install=("$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")
  "${pip_install[@]}" .whl/segcore*.whl >>"$LOG" 2>&1 || echo "pip install of .whl/segcore*.whl failed" | tee -a "$LOG"
  others=$(ls .whl/*.whl | grep -v '^.whl/segcore')
  [ -z "$others" ] || "${pip_install[@]}" $others >>"$LOG" 2>&1 \
    || echo "pip install of the third-party wheels failed (see gpu_check.log); going on" | tee -a "$LOG"
  export GPU_CHECK_SITE=$SITE GPU_CHECK_WHEELS="$(cat .whl/SOURCE 2>/dev/null || echo unknown)"
else
  echo "no .whl/ here: run scripts/gpu_wheels.sh and carry .whl (segcore's plugins need installed wheels)" | tee -a "$LOG"
fi
SRC=$ROOT/packages/core/src:$ROOT/packages/datasets/src:$ROOT/cli/src
SRC=$SRC:$ROOT/packages/segnext/src:$ROOT/packages/segvit/src:$ROOT/packages/segdeformer/src
export PYTHONPATH=$SRC:$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 OUT
"$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())' \
  2>&1 | tee -a "$LOG"
"$PYTHON" scripts/gpu_check.py --out "$OUT" "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
ls -l "$OUT"
exit $status
