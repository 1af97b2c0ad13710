#!/bin/bash
# Source on the GPU machine (device tool, carry [".gpu"], built here by scripts/gpu_pack.sh):
# installs the carried wheels and puts the carried redis-server and its libraries on the paths.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1 || exit 1
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=$PWD/.gpu/bin:${LD_LIBRARY_PATH:-} PATH=$PWD/.gpu/bin:/tmp/site/bin:$PATH
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHON=python3
mkdir -p /tmp/site/bin && printf '#!/bin/sh\nexec python3 -m pipeline.cli "$@"\n' > /tmp/site/bin/charles && chmod +x /tmp/site/bin/charles
