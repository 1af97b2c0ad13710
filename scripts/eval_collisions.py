"""What a model's collisions hit on the evaluator's held-out plan (traffic, obstacle, edge), with its
speed and throttle just before each: where the ratio to the NPC is lost (docs/evaluation.md "(l)").

    python scripts/eval_collisions.py --config configs/default.toml --weights v56.safetensors [--npc]
"""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from pipeline.config import load_config
from pipeline.evaluate.closed_loop import NPC, EvalSettings, Evaluator, model_policy
from pipeline.games.base import load_game
from pipeline.games.options import game_options
from pipeline.models.loading import build_model_from
from pipeline.wire.weights import from_blob


class CollisionCounter:
    """The game, seen through: every collision's `hit`, and the second of driving before it."""

    def __init__(self, game: Any) -> None:
        self.game = game
        self.hits: collections.Counter[str] = collections.Counter()
        self.speed_before: list[float] = []
        self.throttle_before: list[float] = []
        self.recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=30)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.game, name)

    def reset(self, env: Any) -> Any:
        self.recent.clear()
        return self.game.reset(env)

    def step(self, controls: Any = None) -> Any:
        obs = self.game.step(controls)
        self.recent.append((obs.speed, obs.controls.acceleration_braking))
        if obs.collision:
            self.hits[obs.info.get("hit") or "unknown"] += 1
            self.speed_before.append(max(s for s, _ in self.recent))
            self.throttle_before.append(float(np.mean([t for _, t in list(self.recent)[-15:]])))
        return obs


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--npc", is_flag=True, help="drive the NPC instead of the model (the reference)")
def main(config_path: str, weights: str, npc: bool) -> None:
    torch.set_num_threads(1)
    cfg = load_config(config_path)
    game = CollisionCounter(load_game(cfg.game.backend, **game_options(cfg, realtime=False)))
    if npc:
        policy = NPC
    else:
        blob = Path(weights).read_bytes()
        policy = model_policy(build_model_from(cfg, from_blob(blob, hashlib.sha256(blob).hexdigest())), blob)
    traces = Evaluator(game, EvalSettings.from_config(cfg)).run(policy)
    print(json.dumps({
        "policy": "npc" if npc else weights, "hits": dict(game.hits),
        "max_speed_last_1s_p50": float(np.median(game.speed_before)) if game.speed_before else None,
        "throttle_last_0.5s_mean": float(np.mean(game.throttle_before)) if game.throttle_before else None,
        "collisions_by_episode": [(t.environment, sum(x.collision for x in t.ticks)) for t in traces],
    }))


if __name__ == "__main__":
    main()
