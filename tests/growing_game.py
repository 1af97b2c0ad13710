"""A backend whose frames grow every step, for `tests/test_process_game.py` (it must be
importable by name in the game's child process)."""

from __future__ import annotations

import numpy as np

from pipeline.games.base import Controls, Environment, Observation


class GrowingGame:
    fps = 10.0

    def __init__(self, **_: object) -> None:
        self.side = 8

    def _obs(self) -> Observation:
        frame = np.full((self.side, self.side, 3), self.side % 256, np.uint8)
        return Observation(frame=frame, speed=0.0, purpose=np.zeros(2, np.float32), controls=Controls(),
                           game_time=0.0)

    def reset(self, env: Environment) -> Observation:
        self.side = 8
        return self._obs()

    def step(self, controls: Controls | None = None) -> Observation:
        self.side *= 2
        return self._obs()

    def respawn(self) -> Observation:
        return self._obs()

    def cinematic(self) -> np.ndarray:
        return self._obs().frame

    def close(self) -> None:
        pass
