"""What a model's incidents are on the evaluator's held-out plan: what its collisions hit (traffic,
obstacle, edge), with its speed and throttle just before each, and what each Unstuck followed (a
collision, a wait behind a car or at a junction line, a stop on a clear road, pinned off the road):
where the ratio to the NPC is lost (docs/evaluation.md "(l)", "(r)").

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

STUCK_LOOKBACK_S = 6.0  # an Unstuck follows at least 4 s (unstuck.window_s) of too little movement


class CollisionCounter:
    """The game, seen through: every collision's `hit`, and the second of driving before it;
    every Unstuck's cause, read off the last seconds before the respawn."""

    def __init__(self, game: Any) -> None:
        self.game = game
        self.hits: collections.Counter[str] = collections.Counter()
        self.speed_before: list[float] = []
        self.throttle_before: list[float] = []
        self.recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=30)
        #: per tick: (collision, gap ahead m, on the road, applied throttle, the NPC's throttle here)
        self.track: collections.deque[tuple[bool, float, bool, float, float | None]] = collections.deque(
            maxlen=int(STUCK_LOOKBACK_S * game.fps))
        self.top_speed = 0.0  # since the last (re)spawn: a car that never got going did not set off
        self.unstucks: collections.Counter[str] = collections.Counter()
        self.unstuck_throttle: collections.defaultdict[str, list[tuple[float, float]]] = collections.defaultdict(list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.game, name)

    def reset(self, env: Any) -> Any:
        self.recent.clear()
        self.track.clear()
        self.top_speed = 0.0
        return self.game.reset(env)

    def respawn(self) -> Any:
        """An Unstuck: classify what the car did in the seconds before it, then respawn."""
        if self.track:
            cause = unstuck_cause(list(self.track), self.top_speed)
            self.unstucks[cause] += 1
            last_2s = list(self.track)[-int(2 * self.game.fps):]
            expert = [e for *_, e in last_2s if e is not None]
            self.unstuck_throttle[cause].append((float(np.mean([t for *_, t, _ in last_2s])),
                                                 float(np.mean(expert)) if expert else float("nan")))
        self.track.clear()
        self.top_speed = 0.0
        return self.game.respawn()

    def step(self, controls: Any = None) -> Any:
        obs = self.game.step(controls)
        self.recent.append((obs.speed, obs.controls.acceleration_braking))
        if obs.collision:
            self.hits[obs.info.get("hit") or "unknown"] += 1
            self.speed_before.append(max(s for s, _ in self.recent))
            self.throttle_before.append(float(np.mean([t for _, t in list(self.recent)[-15:]])))
        self.top_speed = max(self.top_speed, obs.speed)
        expert = obs.info.get("expert")
        sim = getattr(self.game, "traffic", None)
        car = getattr(self.game, "car", None)
        on_road = self.game.world.on_road(car.x, car.y) if car is not None else True
        self.track.append((bool(obs.collision), sim.ego_gap if sim is not None else float("inf"), on_road,
                           obs.controls.acceleration_braking, expert[0] if expert else None))
        return obs


def unstuck_cause(track: list[tuple[bool, float, bool, float, float | None]], top_speed: float) -> str:
    """What the car was doing when it stopped moving: the first matching reason wins."""
    if any(c for c, *_ in track):
        return "after a collision"
    if top_speed < 3.0:
        return "never set off after the (re)spawn"
    if not track[-1][2]:
        return "off the road"
    gap = track[-1][1]
    if gap < 12.0:
        return "waiting (car or junction line within 12 m)"
    return "stopped on a clear road"


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--npc", is_flag=True, help="drive the NPC instead of the model (the reference)")
def main(config_path: str, weights: str, npc: bool) -> None:
    torch.set_num_threads(1)
    cfg = load_config(config_path)
    options = game_options(cfg, realtime=False)
    if not npc:  # the NPC's command beside the model's at every tick (it does not change the drive)
        options["expert_labels"] = True
    game = CollisionCounter(load_game(cfg.game.backend, **options))
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
        "unstucks": dict(game.unstucks),
        "unstuck_throttle_last_2s": {k: {"applied": round(float(np.mean([a for a, _ in v])), 3),
                                         "npc_would": round(float(np.nanmean([e for _, e in v])), 3)}
                                     for k, v in game.unstuck_throttle.items()},
    }))


if __name__ == "__main__":
    main()
