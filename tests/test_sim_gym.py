"""The simulator as a gymnasium environment passes gymnasium's own checker."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

import pipeline.games.sim  # noqa: F401  (registers CharlesSim-v0)


def test_env_checker_passes() -> None:
    env = gym.make("CharlesSim-v0", render_mode="rgb_array", env={"map_seed": 5, "traffic_density": 0.3})
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_driving_forward_earns_reward() -> None:
    env = gym.make("CharlesSim-v0", env={"map_seed": 5, "traffic_density": 0.0}, perturbations=False)
    obs, _ = env.reset(seed=1)
    assert obs["frame"].shape == (120, 160, 3)
    total = 0.0
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(np.array([0.6, 0.0], np.float32))
        total += reward
    assert obs["speed"][0] > 3.0 and total > 0.0
    env.close()
