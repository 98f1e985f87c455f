#!/usr/bin/env bash
# One device check for a lent GPU (issue 10): builds nothing; writes everything under $OUT.
#   1. the card (nvidia-smi) and the software
#   2. benchmarks/train_speed.py for groups of 1, 8, 32 runs: vmap fp32, vmap + compile (CUDA
#      graphs), vmap bf16; per-run and aggregate model-steps/s, peak memory, projected
#      paper_2dshapes.yaml wall time
#   3. a 2,000-step group of 8 FactorVAE runs on dSprites through the sweep (--group-size 8),
#      in fp32 and in bf16; the final losses side by side (bf16_vs_fp32.txt)
# Run from the repository root:  OUT=/some/dir bash benchmarks/gpu_check.sh
# Sizes can be made tiny to check the script itself on a CPU, e.g.
#   OUT=/tmp/gc DEVICE=cpu MODELS=1,2 REPEATS=1 STEPS=20 GROUP=2 DATA=toy THREADS=1 bash benchmarks/gpu_check.sh
set -u -o pipefail
: "${OUT:?set OUT to the folder for the results}"
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-1,8,32}
REPEATS=${REPEATS:-5}
STEPS=${STEPS:-2000}
GROUP=${GROUP:-8}
DATA=${DATA:-dsprites}
THREADS=${THREADS:-0}
LIMIT=${LIMIT:-150}                         # seconds per benchmark invocation (the sweeps: twice)
COMPILE_LIMIT=${COMPILE_LIMIT:-240}         # torch.compile's first compilation is slow
WORK=${WORK:-$(mktemp -d)}                  # sweep directories (checkpoints stay off $OUT)
export FACTORVAE_CACHE=${FACTORVAE_CACHE:-$WORK/cache}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
status=0
step() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/log.txt"; }

step card
{ nvidia-smi 2>/dev/null || lscpu 2>/dev/null | head -20
  "$PYTHON" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__,
    "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
} > "$OUT/card.txt" 2>&1 || status=1

step "data $DATA"
"$PYTHON" -m factorvae data generate "$DATA" > "$OUT/data.txt" 2>&1 || { status=1; cat "$OUT/data.txt"; }

thr=(); [ "$THREADS" != 0 ] && thr=(--threads "$THREADS")
for variant in "fp32:" "compile:--compile" "bf16:--precision bf16"; do
  name=${variant%%:*}; flags=${variant#*:}
  step "train_speed $name (models $MODELS)"
  # shellcheck disable=SC2086  # flags are words
  limit=$LIMIT; [ "$name" = compile ] && limit=$COMPILE_LIMIT
  timeout "$limit" "$PYTHON" benchmarks/train_speed.py --device "$DEVICE" --models "$MODELS" --strategies vmap \
    --repeats "$REPEATS" --data "$DATA" "${thr[@]}" $flags > "$OUT/train_speed_$name.txt" 2>&1 \
    || { echo "train_speed $name: exit $?" | tee -a "$OUT/log.txt"; status=1; }
done

# a group of GROUP FactorVAE runs (4 gammas x seeds) on DATA, fp32 and bf16
seeds=$(( (GROUP + 3) / 4 ))
for precision in fp32 bf16; do
  spec="$OUT/group_$precision.yaml"
  cat > "$spec" <<YAML
name: group${GROUP}_$precision
base:
  data: {name: $DATA}
  train: {steps: $STEPS, log_every: 100, ckpt_every: 1000, image_every: 1000000, device: $DEVICE,
          precision: $precision, group_strategy: vmap, threads: $THREADS}
methods:
  - {name: factorvae, grid: {gamma: [10, 20, 30, 40]}}
seeds: $seeds
eval: {preset: fast, metrics: [], recon_images: 256, true_tc: null, log_likelihood: null}
YAML
  step "sweep group of $GROUP, $precision, $STEPS steps"
  t0=$(date +%s)
  timeout $(( LIMIT * 2 )) "$PYTHON" -m factorvae sweep "$spec" --out "$WORK/sweep_$precision" --workers 0 \
    --group-size "$GROUP" --no-progress > "$OUT/sweep_$precision.txt" 2>&1 \
    || { echo "sweep $precision: exit $?" | tee -a "$OUT/log.txt"; status=1; }
  echo "wall seconds: $(( $(date +%s) - t0 ))" >> "$OUT/sweep_$precision.txt"
  cp "$WORK/sweep_$precision/results.csv" "$OUT/results_$precision.csv" 2>/dev/null || status=1
  for d in "$WORK/sweep_$precision"/trials/*/; do
    mkdir -p "$OUT/runs_$precision/$(basename "$d")"
    cp "$d"/metrics.jsonl "$d"/summary.json "$d"/trial.json "$OUT/runs_$precision/$(basename "$d")/" 2>/dev/null
  done
done

step "bf16 vs fp32 final losses"
"$PYTHON" - "$OUT" > "$OUT/bf16_vs_fp32.txt" 2>&1 <<'PY' || status=1
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {p: list(csv.DictReader(open(out / f"results_{p}.csv"))) for p in ("fp32", "bf16")}
key = lambda r: (r["model.gamma"], r["train.seed"])
bf = {key(r): r for r in rows["bf16"]}
cols = [c for c in ("final.recon", "final.kl", "final.tc", "final.d_loss", "final.steps_per_s") if c in rows["fp32"][0]]
print("gamma seed " + " ".join(f"{c + ' fp32/bf16':>28}" for c in cols))
for r in sorted(rows["fp32"], key=key):
    b = bf.get(key(r), {})
    print(f"{r['model.gamma']:>5} {r['train.seed']:>4} " + " ".join(f"{r.get(c, ''):>13.13}/{b.get(c, ''):<14.14}" for c in cols))
PY
cat "$OUT/bf16_vs_fp32.txt"
step "done (status $status)"
exit $status
