"""TensorBoard: a real Trainer with the monitor hook writes the tags, read back with TensorBoard's reader."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import redis
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from pipeline.models import build_model
from pipeline.serve.buffers import Buffers
from pipeline.serve.server import Server
from pipeline.train.learner import Learner
from pipeline.train.live import Trainer, TrainerSettings
from pipeline.train.tensorboard import TrainerMonitor
from pipeline.wire.keys import Keys
from pipeline.wire.schema import SampleSchema
from pipeline.wire.weights import WeightsStore
from tests.factories import publish_entry, sample_set, tiny_config


def test_trainer_writes_reference_tags_fill_and_convcam(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    cfg = tiny_config(model={"width": 8, "dense": 32, "head": [16]})
    server = Server(r, keys, cfg, rescan_s=0)
    server.setup()
    for output in cfg.output_names():
        for i in range(10):
            publish_entry(r, keys, output, sample_set(cfg, output, 2, seed=i).entry())
    while server.route_once(block_ms=10):
        pass
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    learner = Learner(model, 1e-3, device="cpu")
    buffers = Buffers(r, keys, cfg.output_names(), cfg.buffers.capacity, 0.1)
    writer = SummaryWriter(log_dir=str(tmp_path / "runs"))
    trainer = Trainer(
        r, keys, learner, buffers, SampleSchema.from_config(cfg),
        TrainerSettings(cfg.run.name, 8, 100, 100, 1, 0, tmp_path / "ckpt"),
        WeightsStore(r, keys), writer=writer,
        on_log=TrainerMonitor(writer, buffers.fills, cfg.buffers.capacity, learner.model, convcam_every=2),
    )
    trainer.run(threading.Event(), max_batches=4)
    writer.close()

    acc = EventAccumulator(str(tmp_path / "runs"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars, images = set(acc.Tags()["scalars"]), set(acc.Tags()["images"])
    reference = {"loss/total", "learning_rate"} | {
        f"{o}/{m}" for o in cfg.output_names() for m in ("loss", "mae")
    }
    ours = {"trainer/batches_per_s", "buffers/min_fill"} | {f"buffers/{o}/fill" for o in cfg.output_names()}
    assert reference | ours <= scalars, sorted(scalars)
    assert {"convcam", "convcam/input"} <= images, sorted(images)

    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2, 3, 4]
    fills = [e.value for e in acc.Scalars("buffers/steering/fill")]
    assert all(0.0 <= f <= 1.0 for f in fills) and fills == sorted(fills, reverse=True) and fills[0] < 1.0
    assert [e.step for e in acc.Images("convcam")] == [1, 2, 4]  # first log, then every 2 batches
    img = acc.Images("convcam")[-1]
    assert img.width >= 256 and img.height > 0
    lr = acc.Scalars("learning_rate")[-1].value
    assert np.isclose(lr, 1e-3)


def test_status_reporter_survives_redis_refusing_writes(r: redis.Redis, keys: Keys) -> None:
    """Issue 15 #2: past maxmemory a player's status reporter thread died (it caught only
    connection errors) and never wrote again once memory was freed."""
    from pipeline.wire.presence import BackgroundReporter, Presence

    presence = Presence(r, keys, "player", "oom-player")
    reporter = BackgroundReporter(presence, period_s=0.05)
    old = r.config_get("maxmemory")["maxmemory"]
    try:
        r.config_set("maxmemory", "1")  # every write is refused with OOM from here
        reporter.update(steps=1)
        time.sleep(0.4)
        assert not r.exists(presence.status_key)
        assert reporter._thread.is_alive()
    finally:
        r.config_set("maxmemory", old)
    reporter.update(steps=2)
    deadline = time.monotonic() + 5
    while r.hget(presence.status_key, "steps") != b"2" and time.monotonic() < deadline:
        time.sleep(0.05)
    reporter.close()
    assert r.hget(presence.status_key, "steps") == b"2"
