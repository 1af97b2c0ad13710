"""Trainer: waits for full buffers, trains on random non-repeating batches, publishes, resumes."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch

from pipeline.config import Config
from pipeline.models import build_model
from pipeline.serve.buffers import Buffers
from pipeline.serve.server import Server
from pipeline.train.learner import Learner, checkpoint_exists
from pipeline.train.live import BatchDrawer, DataAge, Trainer, TrainerSettings
from pipeline.wire.frames import FrameCodec
from pipeline.wire.keys import Keys
from pipeline.wire.rows import row_head_size
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
    """The average is the mean of the iterates until there are more than the decay's span
    (4 batches at 0.75), then the moving average; a restart goes on averaging (it used to copy
    the model over the restored average at the first step)."""
    cfg = tiny_config(model={"width": 8, "dense": 16, "head": [8]})
    hw = (cfg.game.hood_height, cfg.game.hood_width)
    learner = Learner(build_model(cfg.model, cfg.inputs, cfg.outputs, hw), 1e-2, device="cpu", ema_decay=0.75)
    iterates = []
    for seed in range(6):
        learner.step(sample_set(cfg, "steering", 4, seed=seed).columns, with_metrics=False)
        iterates.append({k: v.clone() for k, v in learner.module.state_dict().items()})
    name = next(k for k, v in iterates[0].items() if v.dtype.is_floating_point and v.numel() > 1)
    its = [it[name] for it in iterates]
    expected = 0.75 * (0.75 * sum(its[:4]) / 4 + 0.25 * its[4]) + 0.25 * its[5]
    assert torch.allclose(learner.weights()[name], expected, atol=1e-6)
    assert not torch.allclose(learner.weights()[name], its[5])  # not the last iterate
    learner.save_checkpoint(tmp_path / "ckpt")
    again = Learner(build_model(cfg.model, cfg.inputs, cfg.outputs, hw), 1e-2, device="cpu", ema_decay=0.75)
    again.load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(again.weights()[name], learner.weights()[name])
    assert torch.equal(again.module.state_dict()[name], its[5])
    again.step(sample_set(cfg, "steering", 4, seed=6).columns, with_metrics=False)
    after_restart = 0.75 * learner.weights()[name] + 0.25 * again.module.state_dict()[name]
    assert torch.allclose(again.weights()[name], after_restart, atol=1e-6)


def _png_buffers(r: redis.Redis, keys: Keys, start_fraction: float, spoil: Callable[[str, list[bytes]], list[bytes]]
                 ) -> tuple[Config, Buffers]:
    """Delete-on-draw buffers of 4 PNG rows per output, with `spoil(output, rows)` inserted:
    a spoilt row keeps its head and length (so routing takes it) but holds no PNG."""
    cfg = tiny_config(buffers={"capacity": 4, "samples_per_insert": 1.0})
    buffers = Buffers(r, keys, cfg.output_names(), 4, start_fraction)
    for output in cfg.output_names():
        rows = sample_set(cfg, output, 4, seed=len(output)).rows(FrameCodec("png"))
        buffers.insert(output, f"set-{output}", spoil(output, rows))
    return cfg, buffers


def _spoilt(row: bytes) -> bytes:
    head = row_head_size(row)
    return row[:head] + b"\x00" * (len(row) - head)


def _first_batch(cfg: Config, buffers: Buffers, batch_size: int) -> tuple[BatchDrawer, tuple[int, Any, dict[str, np.ndarray]]]:
    """The drawer (stopped) and the first batch it queued."""
    out: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    drawer = BatchDrawer(buffers, SampleSchema.from_config(cfg), batch_size, out, stop)
    drawer.start()
    try:
        return drawer, out.get(timeout=10)
    finally:
        stop.set()
        drawer.join(5)


def test_a_bad_row_costs_only_itself(r: redis.Redis, keys: Keys) -> None:
    """A coded frame can pass routing (the server checks each row's head and length) and still
    not decode: that dropped the whole batch, other collectors' rows with it. Now the batch
    keeps the other rows and `bad_rows` counts the one."""
    def first_spoilt(output: str, rows: list[bytes]) -> list[bytes]:
        return [_spoilt(rows[0]), *rows[1:]] if output == "acceleration_braking" else rows

    cfg, buffers = _png_buffers(r, keys, 1.0, first_spoilt)
    drawer, (n, columns, _provenance) = _first_batch(cfg, buffers, 8)
    assert drawer.bad_rows == 1
    assert n == 7 and len(columns["frames"]) == 7


def test_a_batch_left_with_one_row_waits_for_the_next_draw(r: redis.Redis, keys: Keys) -> None:
    """Batch norm cannot train on one row: a batch that rejection left with one killed the
    trainer (seen in the fault test). The row now joins the next draw's rows."""
    def all_spoilt(output: str, rows: list[bytes]) -> list[bytes]:  # a draw of two: one bad row, one good
        return [_spoilt(row) for row in rows] if output == "acceleration_braking" else rows

    cfg, buffers = _png_buffers(r, keys, 0.25, all_spoilt)
    assert cfg.output_names() == ["acceleration_braking", "steering"]
    drawer, (n, columns, provenance) = _first_batch(cfg, buffers, 2)
    assert n == 2 == len(columns["frames"]) == len(provenance["captured_at"])
    assert drawer.bad_rows == 2 and buffers.fills()["steering"] == 2  # two draws, the first row kept
