#!/usr/bin/env bash
# GPU benchmarks and training in one unattended run: meta-training throughput of one workload
# on CUDA (benchmarks/meta_train.py), then one Omniglot preset trained for a fixed wall-clock
# budget (cosine schedule sized from the measured seconds per iteration), evaluated on 600
# held-out tasks. Everything that matters is copied under $OUT ($OUT/gpu.log has the log).
# Tried on the CPU first with DEVICE=cpu.
#
# Workloads (benchmarks/meta_train.py): W1 is sinusoid regression (MLP 1-40-40-1, meta-batch
# 25); W2 is Conv4 5-way 1-shot on 28x28 images (meta-batch 32); w2-omniglot-20w is 20-way
# 1-shot on real Omniglot batches (5 inner steps, meta-batch 16). WORKLOAD=all runs W1 and W2.
#
# The shipped Omniglot models (budgets as their training logs record them):
#   OUT=runs/gpu BUDGET=420 bash benchmarks/gpu_benchmarks.sh          # W1 + W2, then 5-way 1-shot
#   OUT=runs/gpu BUDGET=430 PRESET=omniglot-20w1s WORKLOAD=w2-omniglot-20w \
#       BENCH_ARGS="--strategies vmap" bash benchmarks/gpu_benchmarks.sh   # 20-way 1-shot
#   OUT=runs/gpu BUDGET=220 ITERS=1500 PRESET=omniglot-20w1s TRAIN_ARGS="--set \
#       train.init_from=models/omniglot-20w1s --set train.outer_lr=0.0005" \
#       bash benchmarks/gpu_benchmarks.sh             # a second cosine cycle from the shipped one
#
# A schedule longer than one run, in windows: RESUME names a run directory kept in the
# repository (checkpoint/, metrics.jsonl, the artifact). The first run starts it (PRESET,
# ITERS: the whole schedule, e.g. the paper's 60,000), each run trains it for BUDGET seconds
# and writes the updated run under $OUT/run/, to be copied back over RESUME and committed; the
# next run resumes it where it stopped (weights, Adam, schedule position, random streams).
# NPROC=N trains with torchrun on N GPUs (the run must keep its number of processes).
#   OUT=runs/gpu BUDGET=480 RESUME=runs/omniglot-20w1s-60k PRESET=omniglot-20w1s ITERS=60000 \
#       bash benchmarks/gpu_benchmarks.sh             # then: cp -r runs/gpu/run/. runs/omniglot-20w1s-60k/
#
# Profiling and the training options: PROFILE=1 profiles one 5-way and one 20-way
# meta-iteration first (benchmarks/profile_meta_step.py); OPTIONS=1 then measures each training
# option (bf16, fused Adam, the loop and channels-last, first order, CUDA graphs through
# torch.compile's reduce-overhead mode, second and first order, and bf16 + fused Adam + CUDA
# graphs) in `meta-core train` for OPTIONS_PRESETS (preset:workload pairs, default the 20-way
# one) into $OUT/options.jsonl; OPTIONS_ONLY=1 stops there. Each run is cut at OPTIONS_TIMEOUT
# seconds (120; compiling is the slow part): docs/benchmarks.md has the times.
#   OUT=runs/gpu PROFILE=1 OPTIONS=1 OPTIONS_ONLY=1 bash benchmarks/gpu_benchmarks.sh
#
# The decoded Omniglot cache (data/cache/omniglot28.safetensors, META_CORE_CACHE) saves the
# first read's decoding: keep it with the checkout between runs.
set -euo pipefail
OUT=${OUT:?set OUT}
BUDGET=${BUDGET:-280}            # seconds of Omniglot training
PRESET=${PRESET:-omniglot-5w1s}
WORKLOAD=${WORKLOAD:-all}        # the benchmark workload; its vmap second-order row sizes ITERS
DEVICE=${DEVICE:-cuda}
BENCH_ARGS=${BENCH_ARGS:-}       # e.g. "--strategies vmap --iters 1" for a CPU dry run
EVAL_ARGS=${EVAL_ARGS:-}         # e.g. "--set tasks=50" for a CPU dry run
TRAIN_ARGS=${TRAIN_ARGS:-}       # more overrides, e.g. "--set train.init_from=models/X"
PROFILE_ARGS=${PROFILE_ARGS:-}   # PROFILE=1: profile first; e.g. "--omniglot" for real batches
PY=${PY:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export META_CORE_CACHE=${META_CORE_CACHE:-$PWD/data/cache}   # omniglot28.safetensors, kept
# The Omniglot zips: OMNIGLOT_DIR, else meta_core's default, data/omniglot.
mkdir -p "$OUT/$PRESET"
RUN=$(mktemp -d)/$(basename "${RESUME:-$PRESET}")

{ nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv 2>/dev/null || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/gpu.log"

if [ -n "${PROFILE:-}" ]; then  # torch.profiler of one 5-way and one 20-way meta-iteration
    $PY benchmarks/profile_meta_step.py --device "$DEVICE" --out "$OUT/profile" $PROFILE_ARGS \
        | tee -a "$OUT/gpu.log"
fi
if [ -n "${OPTIONS:-}" ]; then  # each training option's tasks/s and GFLOP/s
    # In `meta-core train` itself, against the device's measured convolution peak; a failing
    # option gives its error line and the others still run.
    for spec in ${OPTIONS_PRESETS:-omniglot-20w1s:w2-omniglot-20w}; do
        $PY benchmarks/train_throughput.py --preset "${spec%%:*}" --flops "${spec##*:}" \
            --device "$DEVICE" --iterations "${OPTIONS_ITERS:-60}" --log-every "${OPTIONS_LOG:-10}" \
            --timeout "${OPTIONS_TIMEOUT:-120}" --configs 1x0 1x0:train.bf16=true \
            1x0:train.fused_adam=true 1x0:train.strategy=loop \
            1x0:train.strategy=loop,train.channels_last=true 1x0:algorithm.first_order=true \
            1x0:train.compile=true,train.compile_mode=reduce-overhead \
            1x0:algorithm.first_order=true,train.compile=true,train.compile_mode=reduce-overhead \
            1x0:train.bf16=true,train.fused_adam=true,train.compile=true,train.compile_mode=reduce-overhead \
            | tee -a "$OUT/options.jsonl"
    done
    [ -n "${OPTIONS_ONLY:-}" ] && exit 0
fi
NPROC=${NPROC:-1}
TRAIN=(-m meta_core)
if [ "$NPROC" -gt 1 ]; then TRAIN=(-m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m meta_core.cli); fi

if [ -n "${RESUME:-}" ]; then  # one window of a schedule kept in the repository
    if [ -f "$RESUME/checkpoint/state.json" ]; then
        cp -r "$RESUME/." "$RUN/"
        echo "resuming $RESUME for ${BUDGET}s" | tee -a "$OUT/gpu.log"
        $PY "${TRAIN[@]}" train --resume --out "$RUN" --no-progress \
            --set train.device="$DEVICE" --set train.max_seconds="$BUDGET" 2>&1 | tee -a "$OUT/gpu.log"
    else
        echo "starting $RESUME: $PRESET, ${ITERS:?set ITERS, the whole schedule} iterations" | tee -a "$OUT/gpu.log"
        $PY "${TRAIN[@]}" train --preset "$PRESET" --out "$RUN" --no-progress \
            --set train.device="$DEVICE" --set train.iterations="$ITERS" --set train.cosine=true \
            --set train.max_seconds="$BUDGET" --set train.val_every=500 \
            --set train.checkpoint_every=500 $TRAIN_ARGS 2>&1 | tee -a "$OUT/gpu.log"
    fi
    mkdir -p "$OUT/run/checkpoint"
    cp "$RUN"/checkpoint/state.{safetensors,json} "$OUT/run/checkpoint/"
    cp "$RUN"/{weights.safetensors,manifest.json,metrics.jsonl} "$OUT/run/"
    $PY - "$RUN/checkpoint/state.json" <<'PY' | tee -a "$OUT/gpu.log"
import json, sys
state = json.load(open(sys.argv[1]))
total = state["config"]["train"]["iterations"]
print(f"at iteration {state['iteration']} of {total}; best validation at {state['best_iteration']}")
PY
    exit 0
fi

if [ -z "${ITERS:-}" ]; then  # ITERS set: skip the benchmark, train that many iterations
$PY benchmarks/meta_train.py --device "$DEVICE" --workload "$WORKLOAD" $BENCH_ARGS \
    | tee "$OUT/bench_gpu.jsonl"
ITERS=$($PY - "$OUT/bench_gpu.jsonl" "$BUDGET" "$WORKLOAD" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
workload = "w2" if sys.argv[3] == "all" else sys.argv[3]
row = next(r for r in rows if r["workload"] == workload and r["strategy"] == "vmap"
           and r["order"] == "second")
# 10% for validation and logging.
print(max(20, int(float(sys.argv[2]) / (row["s_per_iter"] * 1.10))))
PY
)
fi
echo "training $PRESET for $ITERS iterations (budget ${BUDGET}s)" | tee -a "$OUT/gpu.log"
$PY -m meta_core train --preset "$PRESET" --out "$RUN" --no-progress \
    --set train.device="$DEVICE" --set train.iterations="$ITERS" --set train.cosine=true \
    --set train.max_seconds="$((BUDGET + 30))" --set train.val_every=500 \
    --set train.checkpoint_every=2000 $TRAIN_ARGS 2>&1 | tee -a "$OUT/gpu.log"
cp "$RUN"/{weights.safetensors,manifest.json,metrics.jsonl} "$OUT/$PRESET/"
$PY -m meta_core eval "$RUN" --device "$DEVICE" $EVAL_ARGS 2>&1 | tee -a "$OUT/gpu.log"
cp "$RUN"/{manifest.json,report.json,training_curves.png,loss_vs_steps.png} "$OUT/$PRESET/"
