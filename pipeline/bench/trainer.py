"""`charles bench trainer`: samples/s trained with batches drawn from Redis vs the compute limit.

- ceiling: the same Learner on one synthetic batch already on the device (no Redis, no
  decoding, no host-to-device copy): what the model and optimizer can do.
- value: the real `Trainer` loop (gated Lua draw, decode and stack in the prefetch
  thread, copy to the device), timed from its fifth batch, on buffers pre-filled in a
  throwaway redis-server; a refill process tops them up when the run needs more than
  fits in memory.
Rows hold the simulator's frames, coded with the config's `[buffers] frame_codec`, so the
prefetch thread decodes what a live trainer would.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench import result
from pipeline.config import Config, load_config
from pipeline.serve.buffers import Buffers
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.manifest import SampleSet
from pipeline.wire.schema import SampleSchema, empty_columns

PREFILL_BYTES_CAP = 3 * 1024**3  # at least; a quarter of the machine's memory where that is more
POOL = 256


def _rows(cfg: Config, n: int) -> list[bytes]:
    from pipeline.bench.codec import sim_frames
    from pipeline.wire.frames import FrameCodec

    rng = np.random.default_rng(0)
    schema = SampleSchema.from_config(cfg)
    cols = empty_columns(schema, n)
    frames = sim_frames((schema.width, schema.height), min(n * schema.frames, 48))
    flat = cols["frames"].reshape(-1, schema.height, schema.width, 3)
    flat[:] = frames[np.arange(len(flat)) % len(frames)]
    cols["targets"][:] = rng.uniform(-1, 1, cols["targets"].shape)
    cols["controls"][:] = rng.uniform(-1, 1, cols["controls"].shape)
    return SampleSet("x", "bench", "e", cols, {}).rows(FrameCodec(cfg.buffers.frame_codec, cfg.buffers.frame_quality))


def _add(r: Any, keys: Keys, outputs: list[str], rows: list[bytes], count: int, tag: str) -> None:
    """Put `count` rows into every output's buffer under fresh ids."""
    buffers = Buffers(r, keys, outputs, capacity=10**9)
    for start in range(0, count, POOL):
        n = min(POOL, count - start)
        for name in outputs:
            buffers.insert(name, f"{tag}-{start}", [rows[i % len(rows)] for i in range(n)])


def _feeder(url: str, prefix: str, cfg_json: str, low_water: int, stop: Any) -> None:
    """Separate process: keep every buffer above `low_water` (stands in for collectors + server)."""
    import redis

    cfg = Config.from_json(cfg_json)
    r, keys = redis.Redis.from_url(url), Keys(prefix)
    rows = _rows(cfg, POOL)
    outputs = cfg.output_names()
    round_ = 0
    while not stop.is_set():
        if min(r.scard(keys.buffer(n)) for n in outputs) < low_water:
            _add(r, keys, outputs, rows, low_water, f"feed{round_}")
            round_ += 1
        else:
            time.sleep(0.005)


def run(config_path: str | None = None, seconds: float = 10.0, device: str | None = None, **_: Any) -> dict[str, Any]:
    """Compute-limit samples/s and Redis-fed samples/s for the config's model, side by side."""
    import torch

    from pipeline.models import build_model
    from pipeline.train.learner import Learner
    from pipeline.train.live import Trainer, TrainerSettings
    from pipeline.wire.weights import WeightsStore

    cfg = load_config(config_path)
    t = cfg.trainer
    hw = (cfg.game.hood_height, cfg.game.hood_width)
    learner = Learner(build_model(cfg.model, cfg.inputs, cfg.outputs, hw), t.learning_rate,
                      device=device or t.device, amp=t.amp)
    if learner.device.type == "cpu" and t.cpu_threads:
        torch.set_num_threads(t.cpu_threads)  # as the trainer process does
    rows = _rows(cfg, POOL)
    from pipeline.wire.stacking import stack_rows

    synthetic = learner.prepare(stack_rows(rows[: t.batch_size], SampleSchema.from_config(cfg)))

    def sync() -> None:
        if learner.device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(5):
        learner.step_tensors(synthetic, with_metrics=False)
    sync()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        learner.step_tensors(synthetic, with_metrics=False)
        n += 1
        if n % 10 == 0:
            sync()
    sync()
    ceiling = n * t.batch_size / (time.perf_counter() - start)

    outputs = cfg.output_names()
    per_output = max(int(ceiling * seconds * 1.5 / len(outputs)), 2000)
    row_bytes = len(rows[0])
    cap = max(PREFILL_BYTES_CAP, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
    prefill = min(per_output, cap // (row_bytes * len(outputs)))
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        ctx = mp.get_context("spawn")
        feeder_stop = ctx.Event()
        feeder = None
        try:
            r, keys = server.client(), Keys("bench-trainer:")
            _add(r, keys, outputs, rows, prefill, "pre")
            if prefill < per_output:
                feeder = ctx.Process(target=_feeder, args=(server.url, keys.prefix, cfg.to_json(), prefill // 2, feeder_stop),
                                     daemon=True)
                feeder.start()
            trainer = Trainer(
                r, keys, learner, Buffers(r, keys, outputs, capacity=t.batch_size, start_fraction=0.0),
                SampleSchema.from_config(cfg),
                TrainerSettings(cfg.run.name, t.batch_size, 10**9, 10**9, 10**9, max(2, t.prefetch), Path(tmp)),
                WeightsStore(r, keys),
            )
            stop = threading.Event()
            thread = threading.Thread(target=trainer.run, args=(stop,), daemon=True)
            thread.start()
            while learner.batches < 5 and thread.is_alive():  # warm: prefetch queue full, kernels tuned
                time.sleep(0.01)
            sync()
            before, t0 = learner.batches, time.perf_counter()
            time.sleep(seconds)
            stop.set()
            thread.join(30)
            sync()
            value = (learner.batches - before) * t.batch_size / (time.perf_counter() - t0)
        finally:
            feeder_stop.set()
            if feeder is not None:
                feeder.join(10)
            server.stop()
    return result(
        "trainer", value, "samples/s", ceiling,
        {"config": str(config_path or "configs/default.toml"), "device": str(learner.device),
         "gpu": torch.cuda.get_device_name(0) if learner.device.type == "cuda" else None,
         "batch_size": t.batch_size, "frame": f"{cfg.game.hood_width}x{cfg.game.hood_height}",
         "amp_bf16": learner.amp, "row_bytes": row_bytes, "frame_codec": cfg.buffers.frame_codec, "prefilled_per_output": prefill,
         "refill_process": feeder is not None},
    )
