"""`charles bench ddp`: data-parallel scaling of the Redis-fed trainer, 1 GPU vs 2 (torchrun).

Each rank draws its own batches from the shared buffers (atomic gated draws) and DDP
all-reduces gradients; rank 0 would publish. Both runs use one throwaway redis-server
pre-filled with the same rows, the same config and the same number of batches per rank.
value = samples/s with 2 ranks, ceiling = 2 x samples/s with 1 rank (perfect scaling).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipeline.bench import result
from pipeline.bench.trainer import _add, _rows
from pipeline.config import load_config
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer


def _torchrun(nproc: int, url: str, prefix: str, config_path: str | None, batches: int, out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pipeline.bench.ddp_rank", "--url", url, "--prefix", prefix, "--batches", str(batches),
           "--out", str(out)]
    if config_path:
        cmd += ["--config", config_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    if len(ranks) != nproc:
        raise RuntimeError(f"expected {nproc} rank reports, got {len(ranks)}")
    return sum(r["samples"] for r in ranks) / max(r["seconds"] for r in ranks)


def run(config_path: str | None = None, seconds: float = 10.0, batches: int = 300, **_: Any) -> dict[str, Any]:
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        raise RuntimeError(f"bench ddp needs 2 GPUs, this machine has {gpus}")
    cfg = load_config(config_path)
    rows = _rows(cfg, 256)
    # warm-up and the prefetched batches a run leaves behind come out of the buffers too
    per_rank = (batches + 20 + 16) * cfg.trainer.batch_size * 3 // (2 * len(cfg.output_names()))
    tmp = Path(tempfile.mkdtemp())
    server = RedisServer(tmp, appendonly=False)
    server.start()
    try:
        r = server.client()
        results = {}
        for nproc in (1, 2):
            prefix = f"bench-ddp{nproc}:"
            _add(r, Keys(prefix), cfg.output_names(), rows, per_rank * nproc, "pre")
            results[nproc] = _torchrun(nproc, server.url, prefix, config_path, batches, tmp / f"ranks{nproc}")
            for key in r.scan_iter(match=f"{prefix}*"):
                r.delete(key)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result(
        "ddp", results[2], "samples/s", 2 * results[1],
        {"config": str(config_path or "configs/default.toml"), "gpus": gpus, "gpu": torch.cuda.get_device_name(0),
         "one_rank_samples_per_s": round(results[1], 1), "two_ranks_samples_per_s": round(results[2], 1),
         "scaling": round(results[2] / results[1], 3), "batches_per_rank": batches,
         "batch_size_per_rank": cfg.trainer.batch_size},
    )
