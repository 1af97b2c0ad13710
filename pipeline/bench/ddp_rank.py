"""One torchrun rank of `charles bench ddp`: the real Trainer loop under DDP, timed, as JSON."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--out", required=True, help="folder for one rank{N}.json per rank")
    args = parser.parse_args()

    import redis
    import torch

    from pipeline.config import load_config
    from pipeline.models import build_model
    from pipeline.serve.buffers import Buffers
    from pipeline.train.distributed import DistributedContext
    from pipeline.train.learner import Learner
    from pipeline.train.live import Trainer, TrainerSettings
    from pipeline.wire.keys import Keys
    from pipeline.wire.schema import SampleSchema
    from pipeline.wire.weights import WeightsStore

    cfg = load_config(args.config)
    t = cfg.trainer
    dist = DistributedContext.from_env()
    dev = dist.init() if dist else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    learner = Learner(model, t.learning_rate, device=dev, amp=t.amp,
                      wrap=(lambda m: dist.wrap(m, dev)) if dist else None)
    r, keys = redis.Redis.from_url(args.url), Keys(args.prefix)
    trainer = Trainer(
        r, keys, learner, Buffers(r, keys, cfg.output_names(), capacity=t.batch_size, start_fraction=0.0),
        SampleSchema.from_config(cfg),
        TrainerSettings(cfg.run.name, t.batch_size, 10**9, 10**9, 10**9, max(2, t.prefetch), Path("/tmp")),
        WeightsStore(r, keys), dist=dist,
    )
    stop = threading.Event()
    trainer.run(stop, max_batches=args.warmup)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.run(stop, max_batches=args.batches)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    rank = dist.rank if dist else 0
    report = {"rank": rank, "samples": args.batches * t.batch_size, "seconds": elapsed, "device": str(dev),
              "pid": os.getpid()}
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(report))
    if dist:
        dist.close()


if __name__ == "__main__":
    main()
