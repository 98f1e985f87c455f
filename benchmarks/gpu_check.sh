#!/usr/bin/env bash
# The one device check of a GPU window (issue 25): ONE command, at most TOTAL seconds (default
# 420 = 7 minutes) including the risky part. Run from the repository root:
#   bash benchmarks/gpu_check.sh OUTDIR
# Every table goes to stdout (python3 -u); OUTDIR ends up holding ONE file, gpu_check.tar.gz
# (check.json: the figures and the choice `make reproduce` reads; log.txt: this output).
#   1. benchmarks/gpu_check.py (card, exactness of the graph path, speed of groups of 1/5/10/32
#      in fp32/bf16 on the loop/vmap/graph paths, one true TC, one Fig. 5 evaluation, one final
#      evaluation, one checkpoint, projected device time) within MAIN seconds;
#   2. last, under its own timeout (what is left of TOTAL): torch.compile of the vmap step.
# Synthetic data of dSprites' shape (no render, no download). Tiny CPU trial of the script itself
# with a simulated limit:
#   TOTAL=90 DEVICE=cpu CHECK_ARGS="--tiny --data toy --sizes 1,2 --per-config 0.5 --windows 2 --window 1" \
#     bash benchmarks/gpu_check.sh /tmp/gc
set -u -o pipefail
OUTDIR=${1:-${OUT:-}}
[ -n "$OUTDIR" ] || { echo "usage: bash benchmarks/gpu_check.sh OUTDIR" >&2; exit 2; }
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
TOTAL=${TOTAL:-420}                 # seconds for everything: the device's 10-minute command limit, with room
COMPILE=${COMPILE:-90}              # seconds kept for the compile variant at the end
CHECK_ARGS=${CHECK_ARGS:-}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
left() { echo $(( TOTAL - ($(date +%s) - start) )); }
mkdir -p "$OUTDIR" || exit 2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
main=$(( TOTAL - COMPILE - 15 ))   # 15 s: start-up and the tarball
status=0
{
  echo "== $(date -u +%H:%M:%S) gpu_check: total ${TOTAL}s, main ${main}s, compile ${COMPILE}s"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  # shellcheck disable=SC2086  # CHECK_ARGS are words
  # its budget ends at start + main (imports included); the timeout is the backstop
  timeout --kill-after=5 $(( $(left) - COMPILE )) "$PYTHON" -u benchmarks/gpu_check.py --out "$WORK" --device "$DEVICE" \
    --deadline $(( start + main )) $CHECK_ARGS || { echo "gpu_check.py: exit $?"; echo 1 > "$WORK/failed"; }
  limit=$(( $(left) - 10 ))
  if [ "$limit" -ge 20 ]; then
    echo "== $(date -u +%H:%M:%S) torch.compile of the vmap step (risky: last), ${limit}s"
    # shellcheck disable=SC2086
    timeout --kill-after=5 "$limit" "$PYTHON" -u benchmarks/gpu_check.py --out "$WORK/compile" --device "$DEVICE" \
      --compile-only $CHECK_ARGS || echo "compile: exit $? (timeout 124: did not finish in ${limit}s)"
  else
    echo "== compile skipped: ${limit}s left"
  fi
  echo "== $(date -u +%H:%M:%S) done in $(( $(date +%s) - start ))s$([ -e "$WORK/failed" ] && echo ", gpu_check.py failed")"
} 2>&1 | tee "$WORK/log.txt"
[ -e "$WORK/failed" ] && status=1
tar -czf "$OUTDIR/gpu_check.tar.gz" -C "$WORK" . && echo "results: $OUTDIR/gpu_check.tar.gz"
exit $status
