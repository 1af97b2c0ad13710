"""A small live system in one process for the dashboard tests: status hashes, weights, loss
points and a player whose LiveView publishes frames from a synthetic game (no simulator)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from pipeline.play.live_view import LiveView
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.presence import Presence
from tests.factories import tiny_config


@dataclass
class Obs:
    frame: np.ndarray


class MovingGame:
    """Frames that change every step: a sky/road picture with a bar sweeping across."""

    def __init__(self, hood: tuple[int, int] = (160, 120), cinematic: tuple[int, int] = (640, 360)) -> None:
        self.hood = hood
        self.cin = cinematic
        self.t = 0

    def _picture(self, w: int, h: int) -> np.ndarray:
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[: h // 2] = (110, 160, 230)
        img[h // 2:] = (70, 120, 60)
        road = np.abs(np.arange(w) - w / 2) < (np.arange(h)[:, None] - h / 2).clip(0) * (w / h)
        img[road] = (70, 70, 75)
        x = (self.t * 7) % w
        img[:, max(0, x - 6): x + 6] = (230, 60, 40)
        return img

    def step(self) -> Obs:
        self.t += 1
        return Obs(self._picture(*self.hood))

    def cinematic(self) -> np.ndarray:
        return self._picture(*self.cin)


class FeatureModel:
    """Stands in for DrivingModel: `last_features` [1, C, h, w] that change every step."""

    def __init__(self, channels: int = 24, hw: tuple[int, int] = (4, 6)) -> None:
        self.rng = np.random.default_rng(0)
        self.shape = (1, channels, *hw)
        self.last_features: np.ndarray | None = None

    def forward(self) -> None:
        self.last_features = self.rng.random(self.shape, dtype=np.float32)


def seed_system(r: redis.Redis, keys: Keys, player_ids: list[str], version: int = 7) -> None:
    """Config, weights info, a trainer, a server, a collector, players, loss points."""
    cfg = tiny_config(run={"name": "model_0003_test"}, buffers={"samples_per_insert": 2.0})
    publish_config(r, keys, cfg)
    now = time.time()
    r.hset(keys.weights_latest, mapping={"version": version, "created": now - 120, "batches": 350,
                                         "model": cfg.run.name, "sha256": "0" * 64})
    for name, fill in zip(cfg.output_names(), (19, 12), strict=False):
        r.sadd(keys.buffer(name), *[f"id{i}" for i in range(fill)])
    r.hset(keys.counters, mapping={"sets_routed:steering": 40, "samples_routed:steering": 80})
    Presence(r, keys, "trainer", "trainer-test").beat(
        state="training", batches=350, samples_per_s=240.0, batches_per_s=7.5, loss=0.2345, version=version,
        device="cpu", learning_rate=1e-3, draws_per_insert=3.875, wait_limited_s=42.4, wait_filling_s=95.0,
        compute_share=0.81, data_age_p50_s=31.2, data_age_p95_s=118.0, policy_lag_p50=2.0,
        model_driven_share=0.46, frame_to_version_s=64.0)
    Presence(r, keys, "server", "server-1").beat(routed_sets=40)
    Presence(r, keys, "collector", "collector-test-1").beat(state="episode", episodes=3, samples=900)
    for pid in player_ids:
        beat_player(r, keys, pid, version, cfg.run.name)
    pipe = r.pipeline()
    for b in range(10, 360, 10):
        pipe.rpush(keys.loss_history, json.dumps({"batch": b, "loss": 1.0 / (1 + b / 50), "t": now - 400 + b}))
    pipe.execute()


def beat_player(r: redis.Redis, keys: Keys, pid: str, version: int, model: str) -> None:
    Presence(r, keys, "player", pid).beat(
        model_version=version, model_created=time.time() - 120, pending_version=0, swaps=2, unstucks=4,
        steps=1234, pps=30.0, fps=30.0, model=model,
        raw=json.dumps({"acceleration_braking": [0.62], "steering": [-0.18]}),
        translated=json.dumps({"acceleration_braking": 0.71, "steering": -0.38}),
        applied=json.dumps({"acceleration_braking": 0.62, "steering": -0.18}))


class PlayerFeed(threading.Thread):
    """Steps a MovingGame at `fps` and calls a real LiveView, like Player.run does."""

    def __init__(self, r: redis.Redis, keys: Keys, player_id: str, fps: float = 20.0, version: int = 7,
                 model: str = "model_0003_test", live_view_fps: float = 10.0) -> None:
        super().__init__(daemon=True, name=f"feed-{player_id}")
        self.r, self.keys, self.player_id = r, keys, player_id
        self.game = MovingGame()
        self.model = FeatureModel()
        self.view = LiveView(r, keys, player_id, self.game, live_view_fps, 80, viewer_check_s=0.2)
        self.period = 1.0 / fps
        self.version, self.model_name = version, model
        self.stop = threading.Event()

    def run(self) -> None:
        last_beat = 0.0
        while not self.stop.is_set():
            obs = self.game.step()
            self.model.forward()
            self.view(obs, self.model)
            if time.monotonic() - last_beat > 0.5:
                beat_player(self.r, self.keys, self.player_id, self.version, self.model_name)
                last_beat = time.monotonic()
            self.stop.wait(self.period)
        self.view.close()

    def halt(self) -> None:
        self.stop.set()
        self.join(5)


def info(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    from pipeline.observe.status import snapshot

    return snapshot(r, keys)
