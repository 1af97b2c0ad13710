#!/bin/bash
# Single-GPU benchmarks, run on the device machine: bash scripts/gpu_bench.sh (writes $OUT/*.json)
source scripts/gpu_env.sh || { echo "gpu_env failed"; exit 1; }
nvidia-smi -L; redis-server --version; python3 -c "import torch, timm; print(torch.__version__, timm.__version__)"
B="python3 -m pipeline.cli bench"
set -x
$B trainer --json --config configs/xception_270x480.toml --seconds 20 | tee $OUT/trainer_xception.json
$B player --json --config configs/xception_270x480.toml --seconds 15 --device cuda | tee $OUT/player_xception.json
$B trainer --json --seconds 10 --device cuda | tee $OUT/trainer_default_gpu.json
for c in xception_270x480 inception_resnet_v2 sequence3; do $B model --json --config configs/$c.toml --seconds 8 | tee -a $OUT/model_gpu.json; done
$B pipeline --json | tee $OUT/pipeline_gpuhost.json
python3 -m pytest -q -p no:cacheprovider tests/test_models.py 2>&1 | tail -5
