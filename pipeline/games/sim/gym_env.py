"""The simulator as a `gymnasium.Env` (`CharlesSim-v0`), for reinforcement-learning libraries.

Observation: the hood frame, speed and Purpose; action: [acceleration_braking, steering].
The reward favours progress along the route and penalises crashes and leaving the road.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pipeline.games.base import Controls, Environment, Observation
from pipeline.games.sim.game import SimGame

_MAX_SPEED = 100.0  # m/s, beyond any car's top speed
_MAX_DIST = 5000.0  # m, beyond any map's diameter


class CharlesSimEnv(gym.Env):
    """Drive the built-in simulator; `reset(seed=...)` picks the episode's randomness."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None, hood_size: tuple[int, int] = (160, 120),
                 cinematic_size: tuple[int, int] = (640, 360), env: dict[str, Any] | None = None, **options: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.base_env = Environment.from_dict(env or {})
        self.game = SimGame(hood_size=hood_size, cinematic_size=cinematic_size, **options)
        w, h = hood_size
        self.observation_space = spaces.Dict({
            "frame": spaces.Box(0, 255, (h, w, 3), np.uint8),
            "speed": spaces.Box(-_MAX_SPEED, _MAX_SPEED, (1,), np.float32),
            "purpose": spaces.Box(np.array([0.0, -math.pi], np.float32), np.array([_MAX_DIST, math.pi], np.float32), dtype=np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._last: Observation | None = None

    def _obs(self, o: Observation) -> dict[str, np.ndarray]:
        purpose = np.array([np.clip(o.purpose[0], 0.0, _MAX_DIST), np.clip(o.purpose[1], -math.pi, math.pi)], np.float32)
        speed = np.array([np.clip(o.speed, -_MAX_SPEED, _MAX_SPEED)], np.float32)
        return {"frame": o.frame, "speed": speed, "purpose": purpose}

    def _info(self, o: Observation) -> dict[str, Any]:
        return {"game_time": o.game_time, "collisions": o.collisions, "odometer": o.odometer,
                "targets_reached": o.targets_reached, "on_road": o.info.get("on_road", True)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """New episode; `options` may override Environment fields (map_seed, weather, ...)."""
        super().reset(seed=seed)
        fields = {**self.base_env.to_dict(), "episode_seed": int(self.np_random.integers(0, 2**31 - 1))}
        fields.update(options or {})
        o = self.game.reset(Environment.from_dict(fields))
        self._last = o
        self._progress = self.game.route_progress()
        return self._obs(o), self._info(o)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        prev = self._last
        o = self.game.step(Controls.from_array(np.asarray(action, np.float32)))
        progress = self.game.route_progress()
        reward = 0.0
        if prev is not None and o.targets_reached > prev.targets_reached:
            reward += 10.0
        elif progress[0] == self._progress[0]:  # same route: metres gained along it
            reward += 0.1 * (progress[1] - self._progress[1])
        self._progress = progress
        reward -= 5.0 * float(o.collision) + (0.0 if o.info.get("on_road", True) else 0.02)
        self._last = o
        return self._obs(o), float(reward), False, False, self._info(o)

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.game.cinematic()
        return None

    def close(self) -> None:
        self.game.close()
