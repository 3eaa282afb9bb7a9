#!/usr/bin/env bash
# The GPU check, prepared to run the moment a GPU is lent (issue 20), in under 8 minutes on one GPU:
#   1. install the project (no network: --no-deps into the machine's own torch environment; wheels
#      carried in .whl/ first, e.g. soundfile, which that image lacks);
#   2. the CUDA tests (tests/test_cuda.py, pytest-xdist where installed) and, beside them, a short
#      bf16-mixed training of every synthetic recipe through the CLI (one of them under DDP/NCCL);
#   3. the GPU benchmark (scripts/bench_attention.py --device cuda: attention paths vs the paper's
#      algorithm vs plain fused SDPA, AA-WRN-28-10 vs WRN-28-10, RISurConv clouds/s), alone on the GPU;
#   4. a report, report.md + report.json, with the logs, under $OUT (default ./device_check_out).
# Without CUDA it writes a report saying so and exits 0. PHASES (default "tests bench") picks phases;
# each phase runs under its own time limit (TESTS_LIMIT, BENCH_LIMIT seconds), so a hang still
# leaves a report. A rerun can narrow phase 2: TESTS_K (a pytest -k expression) and RECIPES (the
# recipes to train, space-separated; "none" for none), and the benchmark: BENCH_ARGS (extra
# arguments, e.g. "--only wrn32 --impls ours,paper,plain").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device_check_out}"
PHASES="${PHASES:-tests bench}"
TESTS_LIMIT="${TESTS_LIMIT:-240}"
BENCH_LIMIT="${BENCH_LIMIT:-200}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
work="$(mktemp -d -t aug-attn-device.XXXXXX)"
start=$SECONDS
log() { echo "device_check [$((SECONDS - start)) s]: $*" | tee -a "$OUT/env.txt"; }

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    echo "cpus: $(nproc)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi: not found"
} >"$OUT/env.txt"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>>"$OUT/env.txt"; then
    log "no CUDA device (torch.cuda.is_available() is False or torch is missing): nothing to check here, skipped"
    "$PYTHON" scripts/device_report.py "$OUT" --skipped "no CUDA device on $(hostname)" || exit 1
    exit 0
fi

# 1. Install: carried wheels, then the project itself without dependencies (the machine's torch stays).
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" .whl/*.whl >>"$OUT/env.txt" 2>&1 \
        && export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}" && log "carried wheels: $(ls .whl | tr '\n' ' ')"
fi
if "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . >>"$OUT/env.txt" 2>&1; then
    log "installed aug-attn (pip install --no-deps -e .)"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    log "pip install failed (see above); running from the source tree (PYTHONPATH)"
fi
"$PYTHON" - >>"$OUT/env.txt" 2>&1 <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
for name in ("torchaudio", "torch_geometric", "lightning", "torchmetrics", "soundfile", "triton", "torch_cluster"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as error:
        print(name, "MISSING:", error)
EOF
export PYTHONUNBUFFERED=1 AUG_ATTN_CACHE_DIR="$work/cache"

# 2. CUDA tests beside short bf16 trainings of the synthetic recipes.
if [[ " $PHASES " == *" tests "* ]]; then
    log "tests + training: start (limit $TESTS_LIMIT s)"
    workers=()
    "$PYTHON" -c "import xdist" 2>/dev/null && workers=(-n "${TESTS_WORKERS:-6}")
    # pytest-timeout: a test stuck compiling fails alone, and the JUnit XML is still written
    "$PYTHON" -c "import pytest_timeout" 2>/dev/null && workers+=(--timeout "$((TESTS_LIMIT - 25))")
    selection=()
    [ -n "${TESTS_K:-}" ] && selection=(-k "$TESTS_K")
    timeout "$TESTS_LIMIT" "$PYTHON" -m pytest -q -rs "${workers[@]}" "${selection[@]}" tests/test_cuda.py -o junit_family=legacy \
        --junitxml="$OUT/cuda_tests.xml" -p no:cacheprovider >"$OUT/tests.log" 2>&1 &
    tests_pid=$!
    # recipe -> overrides: smaller sets and fewer epochs than the CPU defaults, bf16-mixed on the GPU.
    declare -A overrides=(
        [muslcat_synthetic]="--data.num_train 400 --data.num_valid 100 --data.num_test 200 --trainer.max_epochs 4"
        [muslcan_synthetic]="--data.num_train 400 --data.num_valid 100 --data.num_test 200 --trainer.max_epochs 4"
        [samplecnn_synthetic]="--data.num_train 400 --data.num_valid 100 --data.num_test 200 --trainer.max_epochs 4 --trainer.strategy ddp"
        [aa_resnet_synthetic]="--data.num_train 2000 --data.num_test 1000 --trainer.max_epochs 4"
        [risurconv_synthetic]="--data.num_train 700 --data.num_test 350 --trainer.max_epochs 4"
        [pointnet2_synthetic]="--data.num_train 700 --data.num_test 350 --trainer.max_epochs 4"
    )
    recipes="${RECIPES:-${!overrides[*]}}"
    [ "$recipes" = none ] && recipes=""
    train_pids=()
    for recipe in $recipes; do
        # shellcheck disable=SC2086
        (cd "$work" && OMP_NUM_THREADS=2 timeout "$TESTS_LIMIT" "$PYTHON" -m aug_attn_tasks.cli train "$recipe" \
            --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed --trainer.enable_progress_bar false \
            --optim.warmup_epochs 0 --output.dir "$work/runs" ${overrides[$recipe]}) >"$work/train_$recipe.log" 2>&1 &
        train_pids+=($!)
    done
    wait "$tests_pid"; log "tests: exit $?"
    for pid in "${train_pids[@]}"; do wait "$pid"; done
    for recipe in $recipes; do
        {
            echo "=== $recipe: ${overrides[$recipe]}"
            grep -E "Initializing distributed|distributed_backend|Automatic Mixed Precision|GPU available" "$work/train_$recipe.log"
            tail -n 30 "$work/train_$recipe.log"
        } >>"$OUT/train.log"
    done
    log "training: done"
fi

# 3. The benchmark, alone on the GPU.
if [[ " $PHASES " == *" bench "* ]]; then
    log "benchmark: start (limit $BENCH_LIMIT s)"
    # shellcheck disable=SC2086
    timeout "$BENCH_LIMIT" "$PYTHON" scripts/bench_attention.py --device cuda --steps "${BENCH_STEPS:-5}" --warmup 2 \
        --json "$OUT/bench.json" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
    log "benchmark: exit $?"
fi

# 4. The report.
"$PYTHON" scripts/device_report.py "$OUT" --elapsed $((SECONDS - start))
log "report written: $OUT/report.md"
rm -rf "$work"
