#!/usr/bin/env bash
# One session on a CUDA machine, about 9 minutes: what the GPU is, whether torch sees it, the GPU tests, fits with
# the GPU preset, the GPU benchmark (benchmarks/gpu_check.py), then the whole suite in the time left.
# Every step's output goes to stdout and to $OUT/<step>.txt; $OUT/summary.txt has each step's exit status and time.
#
#   bash benchmarks/gpu_session.sh                      # from the repository root
#
# Environment (all optional):
#   PYTHON       the interpreter (default .venv/bin/python, else python)
#   OUT          where the outputs go (default ./gpu_session_out)
#   DEADLINE     seconds the whole session may take (default 550); the suite gets what is left, at most T_SUITE
#   T_GPU_TESTS  T_FIT  T_BENCH  T_SUITE   each step's limit in seconds (default 120, 60 per fit, 400, 180)
#   BENCH_BUDGET seconds for the benchmark's three parts together (default: theirs, 150 + 150 + 55 = 355 s)
#   BENCH_ARGS   more options for gpu_check.py, e.g. "--big_study_epochs 60" or "--members 1,30,1000"
#   SMOKE=1      without CUDA: go on anyway, skipping the tests and the GPU fits, with gpu_check.py --smoke (on CPU),
#                to try this script itself
# The order puts the benchmark before the whole suite: the suite (-n 8, every fit on the GPU) is the step that can
# take longest, so it gets the time that is left.
set -u
cd "$(dirname "$0")/.."
# this checkout's package in every process, wherever the tree was copied to (the venv's editable install points at
# the directory it was made in)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${OUT:-$PWD/gpu_session_out}
mkdir -p "$OUT"
DEADLINE=${DEADLINE:-550}
T_GPU_TESTS=${T_GPU_TESTS:-120}
T_FIT=${T_FIT:-60}
T_BENCH=${T_BENCH:-400}
T_SUITE=${T_SUITE:-180}
BENCH_ARGS=${BENCH_ARGS:-}
[ -n "${BENCH_BUDGET:-}" ] && BENCH_ARGS="--budget $BENCH_BUDGET $BENCH_ARGS"
SMOKE=${SMOKE:-0}
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
SECONDS=0

note() { echo "== $*" | tee -a "$SUMMARY"; }

# step NAME LIMIT COMMAND...: run COMMAND under `timeout LIMIT`, output to stdout and $OUT/NAME.txt
step() {
    local name=$1 limit=$2 started=$SECONDS code
    shift 2
    echo "== [$name] (limit ${limit} s, at ${SECONDS} s): $*" | tee "$OUT/$name.txt"
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    code=${PIPESTATUS[0]}
    local took=$((SECONDS - started))
    if [ "$code" = 124 ] || [ "$code" = 137 ]; then
        note "[$name] STOPPED at its limit of ${limit} s (exit $code)"
    else
        note "[$name] exit $code in ${took} s"
    fi
    return "$code"
}

# Expected on an H200 (not yet measured): machine and torch 5 s, GPU tests 30-60 s, the three fits 40-60 s, the
# benchmark about 360 s, leaving the suite 80-120 s (it took 4 minutes on 2 cores; -n 8 on 16 cores should take
# 1-2 minutes): give DEADLINE=600 or a smaller BENCH_BUDGET when the suite must finish.

# 1. The machine
{
    echo "== [machine] $(date -u +%FT%TZ) $(hostname); $(nproc) cores; $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
        nvidia-smi 2>&1 | head -20
    else
        echo "nvidia-smi: not found"
    fi
    echo "open files: soft $(ulimit -Sn) hard $(ulimit -Hn); processes: $(ulimit -u);" \
        "cgroup pids.max: $(cat /sys/fs/cgroup/pids.max 2>/dev/null || echo n/a)" \
        "(a fit of K members starts a TensorBoard writer thread per member)"
} 2>&1 | tee "$OUT/machine.txt"
sed -n 1p "$OUT/machine.txt" >>"$SUMMARY"
sed -n 2p "$OUT/machine.txt" | sed 's/^/== [machine] GPU (nvidia-smi): /' >>"$SUMMARY"

# 2. Does this torch see the GPU?
"$PY" - <<'EOF' 2>&1 | tee "$OUT/torch.txt"
try:
    import lit_activations
    print(f"lit_activations from {lit_activations.__path__[0]}")
except Exception as err:
    print(f"lit_activations does not import: {err!r}")
import torch
print(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
available = torch.cuda.is_available()
print(f"torch.cuda.is_available() = {available}")
if available:
    print(f"device 0: {torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)},"
          f" {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    print(f"float32 matmul precision {torch.get_float32_matmul_precision()!r},"
          f" cuda.matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}")
EOF
cat "$OUT/torch.txt" | sed 's/^/== [torch] /' >>"$SUMMARY"
if ! grep -q "is_available() = True" "$OUT/torch.txt"; then
    if grep -q "+cpu\|built with CUDA None" "$OUT/torch.txt"; then
        why="this torch is a CPU-only build (see $OUT/torch.txt): install a CUDA build of torch into $PY's environment"
    else
        why="torch is a CUDA build but sees no GPU (driver, CUDA_VISIBLE_DEVICES?)"
    fi
    note "NO CUDA: $why"
    if [ "$SMOKE" != 1 ]; then
        note "nothing else was run (SMOKE=1 would try the script on CPU)"
        exit 3
    fi
    note "SMOKE=1: going on without CUDA (tests and GPU fits skipped, gpu_check.py --smoke)"
fi

# 3. The GPU tests
if [ "$SMOKE" != 1 ]; then
    step gpu_tests "$T_GPU_TESTS" "$PY" -m pytest -q -x -p no:cacheprovider -m gpu -n 3 tests/test_gpu.py
fi

# 4. Fits with the GPU preset (configs/gpu.yaml: every GPU of the machine, one DDP process each): one network as
#    the README shows it, then 6 members of the tutorial configuration
FITS=$(mktemp -d)
if [ "$SMOKE" != 1 ]; then
    step preset_fit "$T_FIT" "$PY" -m lit_activations fit --config configs/gpu.yaml --model.activation=tanh \
        --trainer.max_epochs=5 "--trainer.logger.init_args.save_dir=$FITS/preset"
    step members_fit "$T_FIT" "$PY" -m lit_activations fit --config configs/tutorial.yaml --config configs/gpu.yaml \
        "--members.activations=[sigmoid,tanh,relu]" "--members.seeds=[0,1]" --trainer.max_epochs=5 \
        "--trainer.logger.init_args.save_dir=$FITS/members"
    # a learnable activation on the GPU, with the monitor: its first probe pass builds its sup|f'| grid on the CPU
    # (statistics.max_slopes) and calls the module, whose parameters are on the GPU, on it
    step prelu_fit "$T_FIT" "$PY" -m lit_activations fit --config configs/tutorial.yaml --trainer.accelerator=gpu \
        --trainer.devices=1 "--members.activations=[prelu,relu]" "--members.seeds=[0,1]" --trainer.max_epochs=2 \
        "--trainer.logger.init_args.save_dir=$FITS/prelu"
    step fits_read_back 60 "$PY" -c '
import sys
from pathlib import Path
from lit_activations.events import read_scalars
for events in sorted(Path(sys.argv[1]).rglob("events.out.tfevents.*")):
    scalars = read_scalars(events.parent)
    acc = scalars.get("val/acc", [])
    print(f"{events.parent.relative_to(sys.argv[1])}: {len(scalars)} tags, val/acc at {len(acc)} epochs,"
          f" last {acc[-1][1] if acc else None}")
' "$FITS"
fi
rm -rf "$FITS"

# 5. The benchmark: speed and memory of 1 to 10,000 members, the 30- and 600-member studies, members against
#    single fits (its own budgets: 150 + 150 + 55 s, or BENCH_BUDGET)
if [ "$SMOKE" = 1 ]; then BENCH_ARGS="--smoke $BENCH_ARGS"; fi
# shellcheck disable=SC2086
step benchmark "$T_BENCH" "$PY" benchmarks/gpu_check.py --json "$OUT/gpu_check.json" $BENCH_ARGS
grep -E "^gpu_check|target|members against|wall|\] over|float32|took|stopped|FAILED|ran out|not measured|skipped" \
    "$OUT/benchmark.txt" \
    | sed 's/^/== [benchmark] /' >>"$SUMMARY"

# 6. The whole suite, in the time left
if [ "$SMOKE" != 1 ]; then
    left=$((DEADLINE - SECONDS))
    [ "$left" -gt "$T_SUITE" ] && left=$T_SUITE
    if [ "$left" -ge 60 ]; then
        step suite "$left" "$PY" -m pytest -q -n 8 -p no:cacheprovider --durations=10
        tail -3 "$OUT/suite.txt" | sed 's/^/== [suite] /' >>"$SUMMARY"
    else
        note "[suite] skipped: ${left} s left of the ${DEADLINE} s deadline (DEADLINE or T_* to change)"
    fi
fi

note "session done in ${SECONDS} s; outputs in $OUT"
echo "---- summary ----"
cat "$SUMMARY"
