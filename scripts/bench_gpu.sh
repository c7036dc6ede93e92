#!/usr/bin/env bash
# Everything the template's scaling issue asks to measure on one NVIDIA GPU, in a few minutes:
#   1. Trainer vs hand-written loop, AMP bf16 (target: Trainer/raw time <= 1.03, i.e. >= 0.97 of raw throughput)
#   2. device-resident loader vs DataLoader (target >= 5x on the digits)
#   3. one GPU vs CPU sanity check: the default config on each (accuracy and wall time)
# Usage: bash scripts/bench_gpu.sh   (from anywhere; writes runs under a temp folder)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== 1. overhead, AMP bf16 (DataLoader, then device-resident) =="
python scripts/bench_overhead.py --device cuda --amp bf16 --repeats 5
python scripts/bench_overhead.py --device cuda --amp bf16 --repeats 5 --device-loader

echo "== 2. loaders =="
python scripts/bench_loader.py --device cuda --repeats 5 --amp bf16

echo "== 3. one GPU vs CPU, default config =="
for dev in cuda cpu; do
  start=$(date +%s.%N)
  python project/train.py -c project/config.json -d "$dev" --run-id "sanity-$dev" \
    --set trainer.save_dir="$tmp" --set trainer.verbosity=1 | grep '^final: '
  echo "$dev: $(python -c "import time; print(f'{time.time() - $start:.1f}')") s wall"
done
