#!/bin/bash
# Source on the GPU machine (device tool): installs the carried wheels (.whl) and puts the
# carried redis-server (.devdeps) on PATH. The machine has torch/timm but no Redis.
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || exit 1
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=$PWD/.devdeps:${LD_LIBRARY_PATH:-} PATH=$PWD/.devdeps:$PATH
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
