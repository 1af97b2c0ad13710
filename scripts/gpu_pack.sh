#!/usr/bin/env bash
# Build .gpu/ here, for the device tool's GPU machine (bare image: python3.12 + torch/timm, no
# Redis, no internet): the wheels Charles needs that the image lacks, and redis-server with its
# less common libraries. Carry it with `carry: [".gpu"]` and `source scripts/gpu_env.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/whl .gpu/bin
PKGS="redis hiredis rq croniter msgpack-numpy structlog pydantic pydantic-core annotated-types
typing-inspection gymnasium farama-notifications honcho supervisor starlette uvicorn py-spy zstandard"
for p in $PKGS; do
  v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$p'))")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .gpu/whl "$p==$v"
done
cp "$(command -v redis-server)" "$(command -v redis-cli)" .gpu/bin/  # redis-cli: `bench fleet` makes a cluster
for lib in liblzf.so.1 libjemalloc.so.2; do cp -L "/lib/x86_64-linux-gnu/$lib" .gpu/bin/; done
du -sh .gpu
