#!/usr/bin/env bash
# The GPU check of issue 18, in one go, sized for under 8 minutes on one GPU (H200-class):
#   1. the model tests with --device cuda (every test that takes the `device` fixture);
#   2. scripts/bench.py on CUDA: float32 and bf16 (--precision both), the per-layer
#      convolution modes (--layers) and torch.compile (--compile); then every searchable
#      convolution in channels-last (--channels-last);
# and writes ONE JSON, $OUT/gpu_check.json (OUT: the machine's output folder; default
# ./gpu_check_out). Without a GPU it writes that JSON with "status": "no-gpu" and exits 69.
#
# Usage: scripts/gpu_check.sh [--cpu-smoke]
#   --cpu-smoke  run the same steps on the CPU, cut to seconds (checks the script itself).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export AUTOMTL_CACHE=${AUTOMTL_CACHE:-$OUT_DIR/cache}
PARTS=$(mktemp -d)
trap 'rm -rf "$PARTS"' EXIT

DEVICE=cuda
SMOKE=0
if [ "${1:-}" = "--cpu-smoke" ]; then DEVICE=cpu; SMOKE=1; fi

if [ "$SMOKE" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    "$PY" - "$OUT_DIR/gpu_check.json" <<'PYEOF'
import json, sys
try:
    import torch
    why = f"torch {torch.__version__}: torch.cuda.is_available() is False"
except ImportError as e:
    why = f"torch cannot be imported: {e}"
json.dump({"status": "no-gpu", "reason": why}, open(sys.argv[1], "w"), indent=1)
PYEOF
    echo "gpu_check: no CUDA device ($OUT_DIR/gpu_check.json says why)" >&2
    exit 69
fi

# 1. tests on the device (each step has its own time limit, so one hang cannot eat the rest)
TEST_FILES=$(grep -l "def test_.*\bdevice\b" tests/test_*.py | tr '\n' ' ')
TEST_LIMIT=200
BENCH_ARGS="--quick"
COMPILE="--compile"
if [ "$SMOKE" = 1 ]; then
    COMPILE=""  # inductor on 2 CPU cores: minutes of compilation (and slower; docs/performance.md)
    TEST_FILES="tests/test_tasks_heads.py"
    TEST_LIMIT=300
    BENCH_ARGS="--quick --backbones resnet34_w16 --no-scaling --no-loops --threads 2"
fi
start=$(date +%s)
timeout "$TEST_LIMIT" "$PY" -m pytest -q -p no:cacheprovider $TEST_FILES --device "$DEVICE" \
    > "$PARTS/tests.txt" 2>&1
echo $? > "$PARTS/tests.rc"
echo "gpu_check: tests done in $(( $(date +%s) - start )) s (rc $(cat "$PARTS/tests.rc"))" >&2

# 2. the benchmark: fp32 + bf16, layer modes, torch.compile; then channels-last
start=$(date +%s)
timeout 220 "$PY" scripts/bench.py --device "$DEVICE" --json $BENCH_ARGS --precision both \
    --layers $COMPILE --out "$PARTS/bench.json" > "$PARTS/bench.log" 2>&1
echo $? > "$PARTS/bench.rc"
echo "gpu_check: bench done in $(( $(date +%s) - start )) s (rc $(cat "$PARTS/bench.rc"))" >&2
start=$(date +%s)
timeout 90 "$PY" scripts/bench.py --device "$DEVICE" --json $BENCH_ARGS --precision both \
    --channels-last --no-scaling --no-loops --out "$PARTS/bench_cl.json" \
    > "$PARTS/bench_cl.log" 2>&1
echo $? > "$PARTS/bench_cl.rc"
echo "gpu_check: channels-last bench done in $(( $(date +%s) - start )) s (rc $(cat "$PARTS/bench_cl.rc"))" >&2

"$PY" - "$PARTS" "$OUT_DIR/gpu_check.json" "$DEVICE" "$TEST_FILES" <<'PYEOF'
import json, subprocess, sys
from pathlib import Path
parts, out, device, files = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

def read(name):
    p = parts / name
    return p.read_text(errors="replace") if p.exists() else ""

def part(name):
    text = read(f"{name}.json")
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None

try:
    import torch
    result = {"status": "ok", "device": device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}
except (ImportError, RuntimeError) as e:
    result = {"status": "ok", "device": device, "torch": f"unavailable: {e}", "gpu": None}
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    result["nvidia_smi"] = smi.stdout.strip()
except (OSError, subprocess.SubprocessError):
    result["nvidia_smi"] = None
lines = read("tests.txt").strip().splitlines()
result["tests"] = {"files": files.split(), "rc": int(read("tests.rc") or -1),
                   "summary": lines[-1] if lines else "", "tail": lines[-40:]}
for name in ("bench", "bench_cl"):
    rc = int(read(f"{name}.rc") or -1)
    result[name] = {"rc": rc, "result": part(name),
                    "log_tail": read(f"{name}.log").strip().splitlines()[-20:]}
failed = result["tests"]["rc"] != 0 or any(result[n]["rc"] != 0 for n in ("bench", "bench_cl"))
result["status"] = "failed" if failed else "ok"
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"gpu_check: {result['status']}; wrote {out}", file=sys.stderr)
sys.exit(1 if failed else 0)
PYEOF
