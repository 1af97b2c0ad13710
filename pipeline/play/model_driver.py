"""A model that drives one game by itself: no Redis, no weights watcher, no telemetry.

`charles sim --weights FILE` watches a weights file drive (in a window or to an MP4) with
what the player does on the road: the same context (frames, speed, Purpose, history), the
same `predict`, and the same Stuck detection; where the player would swap weights at an
Unstuck, this driver only respawns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.collect.context import ContextBuilder
from pipeline.config import DEFAULT_CONFIG, Config, load_config
from pipeline.errors import ConfigError
from pipeline.games.base import Controls, Observation
from pipeline.play.unstuck import StuckDetector
from pipeline.wire.schema import ContextSpec


class ModelDriver:
    """Feed it every observation (`observe`); `controls()` is the model's next move."""

    def __init__(self, model: Any, cfg: Config) -> None:
        from pipeline.models import predict

        self.model = model
        self.cfg = cfg
        self.predict = predict
        self.context = ContextBuilder(ContextSpec.from_inputs(cfg.inputs, cfg.game.fps))
        u = cfg.unstuck
        self.detector = StuckDetector(u.min_displacement_m, u.window_s, u.grace_s)
        self.unstucks = 0

    def start(self, obs: Observation) -> None:
        """A new drive (or a respawn) begins at `obs`: forget the past."""
        self.context.reset()
        self.context.push(obs)
        self.detector.reset(obs)

    def controls(self) -> Controls:
        _raw, controls = self.predict(self.model, self.context.context(0))
        return controls

    def observe(self, obs: Observation) -> bool:
        """Record a tick; True when the car is stuck and wants a respawn (counted as an Unstuck)."""
        self.context.push(obs)
        stuck = self.detector.update(obs)
        if stuck:
            self.unstucks += 1
        return stuck


def load_model_driver(weights: str | Path, config_path: Path | None) -> ModelDriver:
    """The weights file's model as a driver of the simulator, built from its run config;
    a one-line CharlesError when the file or the config does not fit."""
    import torch

    from pipeline.models.loading import build_model_from, read_weights_file

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))  # the simulator needs a core too
    cfg = load_config(config_path)
    if cfg.game.backend != "sim":
        raise ConfigError(f"{config_path}: game.backend is {cfg.game.backend!r}; `charles sim` drives the "
                          "built-in simulator only (a model on another backend: `charles player --weights`)")
    tensors, meta = read_weights_file(weights)
    model = build_model_from(cfg, tensors, source=str(weights), meta=meta, config_file=config_path or DEFAULT_CONFIG)
    return ModelDriver(model, cfg)
