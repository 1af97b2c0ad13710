"""A tiny gymnasium env written for the tests of the gymnasium backend (`Lane-v0`, registered
on import, so `gymnasium.make("tests.gym_lane_env:Lane-v0")` finds it).

An image observation (24 x 32 RGB: a white column where the lane centre is), a CarRacing-like
action [steering, gas, brake], reward 1 per step within 0.5 m of the centre, truncated after
`max_steps`. Every action it receives is kept in `actions`; `expert` steers back to the centre.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class LaneEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None, max_steps: int = 1000) -> None:
        self.render_mode = render_mode
        self.max_steps = max_steps
        self.observation_space = spaces.Box(0, 255, (24, 32, 3), np.uint8)
        self.action_space = spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32))
        self.actions: list[list[float]] = []
        self.x, self.speed, self.n = 0.0, 0.0, 0

    def _image(self) -> np.ndarray:
        image = np.full((24, 32, 3), 90, np.uint8)
        image[:, int(np.clip((0.5 - self.x / 4) * 31, 0, 31))] = 255
        return image

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.x, self.speed, self.n = float(self.np_random.uniform(-1, 1)), 0.0, 0
        return self._image(), {"speed": self.speed}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        steer, gas, brake = (float(v) for v in action)
        self.actions.append([steer, gas, brake])
        self.speed = max(0.0, self.speed + (4.0 * gas - 8.0 * brake) / 30)
        self.x = float(np.clip(self.x + steer * self.speed / 150 + self.np_random.normal(0, 0.02), -2, 2))
        self.n += 1
        reward = 1.0 if abs(self.x) < 0.5 else 0.0
        return self._image(), reward, False, self.n >= self.max_steps, {"speed": self.speed}

    def render(self) -> np.ndarray | None:
        return np.repeat(np.repeat(self._image(), 2, axis=0), 2, axis=1) if self.render_mode == "rgb_array" else None


def expert(observation: Any, env: gym.Env) -> list[float]:
    """Charles' [acceleration_braking, steering]: hold 8 m/s, steer back to the centre."""
    lane: LaneEnv = env.unwrapped  # type: ignore[assignment]
    return [float(np.clip((8.0 - lane.speed) / 4.0, -1, 1)), float(np.clip(-lane.x, -1, 1))]


def sim_expert(observation: dict[str, np.ndarray], env: gym.Env) -> list[float]:
    """For CharlesSim-v0, from its observation alone: 8 m/s, steer towards the Purpose target."""
    speed, direction = float(observation["speed"][0]), float(observation["purpose"][1])
    return [float(np.clip((8.0 - speed) / 4.0, -1, 1)), float(np.clip(-2.0 * direction, -1, 1))]


if "Lane-v0" not in gym.registry:
    gym.register(id="Lane-v0", entry_point="tests.gym_lane_env:LaneEnv")
