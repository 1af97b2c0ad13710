"""Trainer: waits for full buffers, trains on random non-repeating batches, publishes, resumes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from pipeline.models import build_model
from pipeline.serve.buffers import Buffers
from pipeline.serve.server import Server
from pipeline.train.learner import Learner, checkpoint_exists
from pipeline.train.live import DataAge, Trainer, TrainerSettings
from pipeline.wire.keys import Keys
from pipeline.wire.schema import SampleSchema
from pipeline.wire.weights import WeightsStore
from tests.factories import publish_entry, sample_set, tiny_config
from tests.processes import wait_until


def setup(r: redis.Redis, keys: Keys, tmp_path: Path) -> tuple[Server, Trainer]:
    cfg = tiny_config(model={"width": 8, "dense": 32, "head": [16]})
    server = Server(r, keys, cfg, rescan_s=0)
    server.setup()
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    learner = Learner(model, 1e-3, device="cpu")
    t = cfg.trainer
    trainer = Trainer(
        r, keys, learner, Buffers(r, keys, cfg.output_names(), cfg.buffers.capacity, 0.9),
        SampleSchema.from_config(cfg),
        TrainerSettings(cfg.run.name, t.batch_size, t.publish_every, t.checkpoint_every, t.log_every, 1,
                        tmp_path / "ckpt"),
        WeightsStore(r, keys),
    )
    return server, trainer


def feed(server: Server, r: redis.Redis, keys: Keys, output: str, n_sets: int, seed: int) -> None:
    for i in range(n_sets):
        publish_entry(r, keys, output, sample_set(server.config, output, 2, seed * 1000 + i).entry())
    while server.route_once(block_ms=10):
        pass


def test_waits_trains_waits_resumes(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    server, trainer = setup(r, keys, tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        feed(server, r, keys, "steering", 10, seed=1)  # steering full, acceleration empty
        feed(server, r, keys, "acceleration_braking", 8, seed=2)  # 16 of 20 < 18
        time.sleep(1.0)
        assert trainer.learner.batches == 0 and trainer.state == "filling"
        feed(server, r, keys, "acceleration_braking", 1, seed=3)  # 18 = exactly 90%
        wait_until(lambda: trainer.learner.batches >= 1, 30, "a first batch", poll=0.02)
        # 20 + 18 samples, 4 per output per batch: after one batch acceleration holds 14 < 18
        wait_until(lambda: trainer.state == "waiting", 30, "the trainer to wait", poll=0.02)
        batches = trainer.learner.batches
        assert batches == 1
        assert r.scard(keys.buffer("acceleration_braking")) == 14 and r.scard(keys.buffer("steering")) == 16
        feed(server, r, keys, "acceleration_braking", 3, seed=4)
        feed(server, r, keys, "steering", 2, seed=5)
        wait_until(lambda: trainer.learner.batches > batches, 30, "another batch", poll=0.02)
        wait_until(lambda: trainer.learner.batches >= 2 and WeightsStore(r, keys).latest_info() is not None, 30,
                   "published weights", poll=0.02)
    finally:
        stop.set()
        thread.join(10)
    info = WeightsStore(r, keys).latest_info()
    assert info is not None and info.version >= 1 and info.batches == 2


def test_checkpoint_resume_keeps_counters(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    server, trainer = setup(r, keys, tmp_path)
    trainer.learner.batches = 7
    trainer.learner.last_version = 3
    trainer.checkpoint()
    assert checkpoint_exists(tmp_path / "ckpt")
    _, fresh = setup(r, keys, tmp_path)
    fresh.learner.load_checkpoint(tmp_path / "ckpt")
    assert fresh.learner.batches == 7 and fresh.learner.last_version == 3
    for a, b in zip(trainer.learner.model.parameters(), fresh.learner.model.parameters(), strict=True):
        assert torch.equal(a.detach().cpu(), b.detach().cpu())
    assert fresh.publish() == 4  # the published version never goes backwards


def test_a_save_cut_off_between_its_renames_leaves_one_complete_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_config()
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    learner = Learner(model, 1e-3, device="cpu")
    ckpt = tmp_path / "ckpt"
    learner.batches = 10
    learner.save_checkpoint(ckpt)
    learner.batches = 20
    learner.save_checkpoint(ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging or old copy left
    # the moments a kill can leave behind: the old set moved aside, the new one (complete or not) staged
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")
    learner.batches = 30
    learner.save_checkpoint(tmp_path / "scratch")
    (tmp_path / "scratch").rename(tmp_path / "ckpt.new")
    fresh = Learner(build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)),
                    1e-3, device="cpu")
    assert checkpoint_exists(ckpt)
    fresh.load_checkpoint(ckpt)
    assert fresh.batches == 30  # the finished new copy
    (tmp_path / "ckpt.new" / "trainer.json").unlink()  # the new copy was cut off before its last file
    fresh.load_checkpoint(ckpt)
    assert fresh.batches == 20  # the old one, whole


def test_data_age_and_policy_lag_of_what_is_trained() -> None:
    age = DataAge(window=8)
    # 4 samples captured at t = 90, 92, 94, 96; two driven by version 3, two by the NPC
    age.add({"captured_at": np.array([90.0, 92.0, 94.0, 96.0]), "policy_version": np.array([3, 0, 3, 0])},
            version=5, now=100.0)
    stats = age.stats()
    assert stats["data_age_p50_s"] == 7.0 and stats["data_age_p95_s"] == pytest.approx(9.7)
    assert stats["policy_lag_p50"] == 2.0 and stats["model_driven_share"] == 0.5
    assert "frame_to_version_s" not in stats  # nothing published yet
    age.published(now=110.0)  # the frames trained since the last publication reached version 6 now
    assert age.stats()["frame_to_version_s"] == 17.0  # median of 20, 18, 16, 14
    for _ in range(3):  # the window keeps the newest samples only
        age.add({"captured_at": np.full(4, 120.0), "policy_version": np.zeros(4, np.int64)}, version=6, now=121.0)
    assert age.stats()["data_age_p95_s"] == 1.0 and "policy_lag_p50" not in age.stats()


def test_published_weights_are_the_moving_average_and_survive_a_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_config(model={"width": 8, "dense": 16, "head": [8]})
    hw = (cfg.game.hood_height, cfg.game.hood_width)
    learner = Learner(build_model(cfg.model, cfg.inputs, cfg.outputs, hw), 1e-2, device="cpu", ema_decay=0.75)
    iterates = []
    for seed in range(3):
        learner.step(sample_set(cfg, "steering", 4, seed=seed).columns, with_metrics=False)
        iterates.append({k: v.clone() for k, v in learner.module.state_dict().items()})
    name = next(k for k, v in iterates[0].items() if v.dtype.is_floating_point and v.numel() > 1)
    first, second, third = (it[name] for it in iterates)
    expected = 0.75 * (0.75 * first + 0.25 * second) + 0.25 * third  # the first update copies
    assert torch.allclose(learner.weights()[name], expected, atol=1e-6)
    assert not torch.allclose(learner.weights()[name], third)  # not the last iterate
    learner.save_checkpoint(tmp_path / "ckpt")
    again = Learner(build_model(cfg.model, cfg.inputs, cfg.outputs, hw), 1e-2, device="cpu", ema_decay=0.75)
    again.load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(again.weights()[name], learner.weights()[name])
    assert torch.equal(again.module.state_dict()[name], third)


def test_a_bad_row_costs_only_itself(r: redis.Redis, keys: Keys) -> None:
    """A coded frame can pass routing (the server checks each row's head and length) and still
    not decode: that dropped the whole batch, other collectors' rows with it. Now the batch
    keeps the other rows and `bad_rows` counts the one."""
    import queue

    from pipeline.train.live import BatchDrawer
    from pipeline.wire.frames import FrameCodec
    from pipeline.wire.rows import row_head_size

    cfg = tiny_config(buffers={"capacity": 4, "samples_per_insert": 1.0})
    schema = SampleSchema.from_config(cfg)
    buffers = Buffers(r, keys, cfg.output_names(), 4, 1.0)
    for output in cfg.output_names():
        rows = sample_set(cfg, output, 4, seed=len(output)).rows(FrameCodec("png"))
        if output == cfg.output_names()[0]:
            head = row_head_size(rows[0])
            rows[0] = rows[0][:head] + b"\x00" * (len(rows[0]) - head)  # same head and length, no PNG
        buffers.insert(output, f"set-{output}", rows)
    out: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    drawer = BatchDrawer(buffers, schema, 8, out, stop)
    drawer.start()
    try:
        n, columns, _provenance = out.get(timeout=10)
    finally:
        stop.set()
        drawer.join(5)
    assert drawer.bad_rows == 1
    assert n == 7 and len(columns["frames"]) == 7
