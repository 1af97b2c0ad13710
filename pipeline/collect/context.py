"""Builds a sample's inputs from recent game ticks, the same way for collector and player.

The collector labels frame t with the controls the NPC chose `1 + label_shift` ticks
later; the player asks for the context of the newest tick. Both use this one class,
so what the model sees at inference matches what it was trained on, stride for stride.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from pipeline.games.base import Observation
from pipeline.wire.schema import ContextSpec


@dataclass
class _Tick:
    frame: np.ndarray
    speed: float
    purpose: np.ndarray
    controls: np.ndarray
    game_time: float


class ContextBuilder:
    """A ring of recent ticks; `context(lag)` gives one sample's inputs for the tick `lag` ago."""

    def __init__(self, spec: ContextSpec) -> None:
        self.spec = spec
        self._ticks: deque[_Tick] = deque(maxlen=spec.lookback + spec.label_shift + 2)

    def reset(self) -> None:
        """Forget the past (after a respawn the old frames would lie about the present)."""
        self._ticks.clear()

    def push(self, obs: Observation) -> None:
        self._ticks.append(
            _Tick(
                frame=obs.frame,
                speed=float(obs.speed),
                purpose=np.asarray(obs.purpose, dtype=np.float32),
                controls=obs.controls.as_array(),
                game_time=float(obs.game_time),
            )
        )

    def __len__(self) -> int:
        return len(self._ticks)

    def ready(self, lag: int = 0) -> bool:
        """True when the tick `lag` ago has its whole lookback recorded."""
        return len(self._ticks) >= lag + 1 + self.spec.lookback

    def latest_controls(self) -> np.ndarray:
        return self._ticks[-1].controls

    def context(self, lag: int = 0) -> dict[str, np.ndarray]:
        """Inputs for the tick `lag` ago: frames, speed, purpose, controls, history, game_time.

        Before the lookback is filled the oldest tick is repeated (the player must drive
        from its first frame; the collector waits for `ready`).
        """
        n = len(self._ticks)
        if n <= lag:
            raise IndexError(f"no tick {lag} ago (have {n})")
        now = n - 1 - lag
        spec = self.spec

        def at(i: int) -> _Tick:
            return self._ticks[max(0, i)]

        frames = np.stack([at(now - k * spec.frame_stride).frame for k in range(spec.frames - 1, -1, -1)])
        history = np.zeros((spec.history, 5), dtype=np.float32)
        for row, k in enumerate(range(spec.history, 0, -1)):
            t = at(now - k * spec.history_stride)
            history[row] = (t.controls[0], t.controls[1], t.speed, t.purpose[0], t.purpose[1])
        tick = self._ticks[now]
        return {
            "frames": frames,
            "speed": np.float32(tick.speed),
            "purpose": tick.purpose,
            "controls": tick.controls,
            "history": history,
            "game_time": np.float64(tick.game_time),
        }
