"""A game with no simulator code that declares only a few capabilities: expert labels, the
weather and its own score. Loaded by dotted path (`tests.lane_game:LaneGame`) like any plug-in.

A car drifts across a lane; its expert throttles to 10 m/s and steers back to the centre.
The hood frame is grey (darker in rain) with a white column where the lane centre is. Its
score, `centred_s`, counts the game seconds spent within 0.5 m of the centre.
Every expert command the game gave for a tick someone else drove is kept in `labels`,
every command applied then in `applied`, so a test can tell whose command a target is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.games.base import WEATHERS, Capabilities, Controls, Environment, Observation


class LaneGame:
    capabilities = Capabilities(expert_labels=True, environment={"weather": WEATHERS}, score="centred_s")

    def __init__(self, hood_size: tuple[int, int] = (160, 120), cinematic_size: tuple[int, int] = (64, 36),
                 fps: float = 30.0, realtime: bool = False, expert_labels: bool = False, **_: Any) -> None:
        self.hood_size, self.cinematic_size = hood_size, cinematic_size
        self.fps = float(fps)
        self.expert_labels = expert_labels
        self.envs: list[Environment] = []
        self.labels: list[tuple[float, float]] = []
        self.applied: list[tuple[float, float]] = []
        self.reset(Environment())

    def reset(self, env: Environment) -> Observation:
        self.envs.append(env)
        self.rng = np.random.default_rng(env.episode_seed)
        self.dark = env.weather == "rain"
        self.x, self.speed, self.t, self.odometer = float(self.rng.uniform(-1, 1)), 0.0, 0.0, 0.0
        self.centred_s = 0.0
        return self._obs(Controls(), {})

    def _expert(self) -> Controls:
        return Controls.from_array([np.clip((10.0 - self.speed) / 5.0, -1, 1), -self.x])

    def step(self, controls: Controls | None = None) -> Observation:
        expert = self._expert()
        info: dict[str, Any] = {}
        if controls is not None and self.expert_labels:
            info["expert"] = expert.as_array().tolist()
            self.labels.append(tuple(expert.as_array().tolist()))
            self.applied.append(tuple(controls.as_array().tolist()))
        applied = controls if controls is not None else expert
        dt = 1.0 / self.fps
        self.speed = max(0.0, self.speed + 4.0 * applied.acceleration_braking * dt)
        self.x = float(np.clip(self.x + applied.steering * self.speed * dt * 0.2 + self.rng.normal(0, 0.02), -2, 2))
        self.t += dt
        self.odometer += self.speed * dt
        self.centred_s += dt if abs(self.x) < 0.5 else 0.0
        return self._obs(applied, info)

    def _obs(self, controls: Controls, info: dict[str, Any]) -> Observation:
        w, h = self.hood_size
        frame = np.full((h, w, 3), 60 if self.dark else 120, np.uint8)
        column = int(np.clip((0.5 - self.x / 4) * (w - 1), 0, w - 1))
        frame[:, column] = 255
        return Observation(frame=frame, speed=self.speed, purpose=np.zeros(2, np.float32), controls=controls,
                           game_time=self.t, odometer=self.odometer, lane_offset=self.x,
                           info={**info, "score": self.centred_s})

    def respawn(self) -> Observation:
        self.x = 0.0
        obs = self._obs(Controls(), {})
        obs.info["respawned"] = True
        return obs

    def cinematic(self) -> np.ndarray:
        w, h = self.cinematic_size
        return np.zeros((h, w, 3), np.uint8)

    def close(self) -> None:
        pass
