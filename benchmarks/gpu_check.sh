#!/usr/bin/env bash
# The CUDA checks of issue 6, as one script for a GPU machine that has torch but not csna
# installed (PYTHONPATH=src). Writes logs and throughput.json files under $OUT (default ./gpu_out).
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda.py 2>&1 | tail -15 | tee "$OUT/pytest_gpu.txt"
for prec in fp32 bf16; do
  timeout 150 python3 -m csna bench throughput --rows 1000000 --cols 100 --device cuda --precision $prec \
    --out "$OUT/tp_$prec" 2>&1 | tail -14 | tee "$OUT/throughput_$prec.txt"
done
/usr/bin/time -v timeout 150 python3 -m csna train --out /tmp/gpu_run --no-figures --quiet 2> "$OUT/train_time.txt" \
  | tail -5; grep -E "Elapsed|Maximum resident" "$OUT/train_time.txt"
cp /tmp/gpu_run/metrics.json "$OUT/ihdp_metrics.json" 2>/dev/null
