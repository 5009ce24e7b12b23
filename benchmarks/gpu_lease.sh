#!/usr/bin/env bash
# One GPU lease, prepared to run unattended: W1/W2 meta-training throughput on CUDA, then
# Omniglot 5-way 1-shot trained for a fixed wall-clock budget (cosine schedule sized from the
# measured seconds per iteration), evaluated on 600 held-out tasks. Everything that matters is
# copied under $OUT (at most 8 files). Tested on the CPU first with DEVICE=cpu BUDGET=20.
#
#   OUT=runs/gpu BUDGET=280 bash benchmarks/gpu_lease.sh
set -euo pipefail
OUT=${OUT:?set OUT}
BUDGET=${BUDGET:-280}            # seconds of Omniglot training
DEVICE=${DEVICE:-cuda}
BENCH_ARGS=${BENCH_ARGS:-}       # e.g. "--strategies vmap --iters 1" for a CPU dry run
EVAL_ARGS=${EVAL_ARGS:-}         # e.g. "--set tasks=50" for a CPU dry run
PY=${PY:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export META_CORE_CACHE=${META_CORE_CACHE:-$PWD/data/cache}   # omniglot28.safetensors, carried
mkdir -p "$OUT/omniglot-5w1s"
RUN=$(mktemp -d)/omniglot-5w1s

{ nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv 2>/dev/null || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/lease.log"

if [ -z "${ITERS:-}" ]; then  # ITERS set: skip the benchmark, train that many iterations
$PY benchmarks/meta_train.py --device "$DEVICE" $BENCH_ARGS | tee "$OUT/bench_gpu.jsonl"
ITERS=$($PY - "$OUT/bench_gpu.jsonl" "$BUDGET" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
row = next(r for r in rows if r["workload"] == "w2" and r["strategy"] == "vmap"
           and r["order"] == "second")
print(max(20, int(float(sys.argv[2]) / (row["s_per_iter"] * 1.08))))
PY
)
fi
echo "training omniglot-5w1s for $ITERS iterations (budget ${BUDGET}s)" | tee -a "$OUT/lease.log"
$PY -m meta_core train --preset omniglot-5w1s --out "$RUN" --no-progress \
    --set train.device="$DEVICE" --set train.iterations="$ITERS" --set train.cosine=true \
    --set train.max_seconds="$((BUDGET + 30))" --set train.val_every=500 \
    --set train.checkpoint_every=2000 2>&1 | tee -a "$OUT/lease.log"
cp "$RUN"/{weights.safetensors,manifest.json,metrics.jsonl} "$OUT/omniglot-5w1s/"
$PY -m meta_core eval "$RUN" --device "$DEVICE" $EVAL_ARGS 2>&1 | tee -a "$OUT/lease.log"
cp "$RUN"/{manifest.json,report.json,training_curves.png,loss_vs_steps.png} "$OUT/omniglot-5w1s/"
