#!/usr/bin/env bash
# The GPU checks of issue 8 in one go, for a machine with an NVIDIA GPU:
#   bash bench/gpu_check.sh            (results under $OUT, else bench/results/gpu)
#
# 1. picks a Python that has cupy (PYTHON if set, then .venv, then python3), or installs
#    `.[dev,gpu]` into .venv when none has it (only where nvidia-smi shows a GPU; without
#    one the steps run on the CPU as they are, GPU cases skipping with their reason);
# 2. records the GPU, cupy and engine.cuda's view of it (env.txt);
# 3. runs the GPU-marked tests (`pytest -m gpu`), the device tests (fake and real), the
#    whole engine and frontends suites with cupy present (the same-device check is live there),
#    and both again with every tensor on the GPU (`--device cuda`);
# 4. runs the GPU benchmark (`python -m bench gpu`: ours on cupy vs PyTorch CUDA).
# Every step runs even when one before it failed; summary.txt has each step's exit status,
# and the script exits non-zero when any step failed. Service tests run only where the
# service's packages (fastapi ...) import.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
: >"$OUT/summary.txt"

has_cupy() { "$1" -c 'import cupy, numpy, scipy, pytest' >/dev/null 2>&1; }

PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in .venv/bin/python python3; do
        if command -v "$candidate" >/dev/null 2>&1 && has_cupy "$candidate"; then PY=$candidate; break; fi
    done
fi
if [ -z "$PY" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    # No GPU here: run the same steps without installing anything (GPU cases skip, saying why).
    PY=$(command -v .venv/bin/python || command -v python3)
    echo "no NVIDIA GPU visible: running the checks on the CPU with $PY" | tee -a "$OUT/summary.txt"
fi
if [ -z "$PY" ]; then
    echo "no Python with cupy found: installing .[dev,gpu] into .venv" | tee -a "$OUT/summary.txt"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install --quiet -e '.[dev,gpu]' && PY=.venv/bin/python
fi
if [ -z "$PY" ]; then
    echo "FAILED: could not install cupy (offline? carry wheels, see .library/device/README.md)" | tee -a "$OUT/summary.txt"
    exit 1
fi

step() {  # step NAME COMMAND...: run, keep the log, record the exit status
    local name=$1
    shift
    echo "== $name: $*"
    "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 5 "$OUT/$name.txt"
    echo "$name: exit $rc" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

step env bash -c "nvidia-smi || true; $PY -c 'import sys, numpy, engine; print(sys.version); \
print(\"numpy\", numpy.__version__, \"cupy\", getattr(engine.backend.cupy, \"__version__\", None)); \
print(\"engine.cuda:\", engine.cuda.is_available(), engine.cuda.device_count(), engine.cuda.unavailable_reason())'"
step pytest_gpu "$PY" -m pytest -m gpu tests/engine tests/frontends -q -p no:cacheprovider
step pytest_devices "$PY" -m pytest tests/engine/test_devices.py -q -p no:cacheprovider
step pytest_engine "$PY" -m pytest tests/engine tests/frontends -q -x -p no:cacheprovider -n 8
step pytest_engine_on_gpu "$PY" -m pytest tests/engine tests/frontends --device cuda -m "not host_only" -q -p no:cacheprovider -n 8
if "$PY" -c 'import fastapi, fastapi_offline, pydantic_settings, orjson, pybase64' >/dev/null 2>&1; then
    step pytest_service_devices "$PY" -m pytest tests/service/test_devices.py -q -p no:cacheprovider
else
    echo "pytest_service_devices: skipped (the service's packages are not installed here)" | tee -a "$OUT/summary.txt"
fi
step bench_gpu "$PY" -m bench gpu
cat "$OUT/summary.txt"
exit $status
