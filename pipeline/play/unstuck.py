"""Stuck detection by displacement (not odometer): did the car move X metres in the last Y seconds?

Backends that cannot tell a position (the `screen` backend) report `info["frame_motion"]`
instead; then "stuck" means the picture barely changed for the whole window.
"""

from __future__ import annotations

import math
from collections import deque

from pipeline.games.base import Observation

FRAME_MOTION_STILL = 2.0  # mean absolute pixel change (0..255) below which a frame counts as still


class StuckDetector:
    """Feed every observation; `stuck` turns True when the window shows too little movement."""

    def __init__(self, min_displacement_m: float, window_s: float, grace_s: float = 2.0) -> None:
        self.min_displacement_m = min_displacement_m
        self.window_s = window_s
        self.grace_s = grace_s
        self._track: deque[tuple[float, tuple[float, float] | None, float]] = deque()
        self._since: float | None = None

    def reset(self, obs: Observation | None = None) -> None:
        """Forget the track (after a respawn); the grace period starts at `obs`."""
        self._track.clear()
        self._since = obs.game_time if obs is not None else None
        if obs is not None:
            self.update(obs)

    def update(self, obs: Observation) -> bool:
        """Record one tick and return whether the car is stuck now."""
        if self._since is None:
            self._since = obs.game_time
        self._track.append((obs.game_time, obs.position, float(obs.info.get("frame_motion", math.inf))))
        while self._track and obs.game_time - self._track[0][0] > self.window_s:
            self._track.popleft()
        return self.stuck

    @property
    def stuck(self) -> bool:
        if len(self._track) < 2:
            return False
        t0, p0, _ = self._track[0]
        t1, p1, _ = self._track[-1]
        if self._since is not None and t1 - self._since < self.grace_s + self.window_s:
            return False
        if t1 - t0 < self.window_s * 0.95:
            return False
        if p0 is not None and p1 is not None:
            return math.dist(p0, p1) < self.min_displacement_m
        return all(motion < FRAME_MOTION_STILL for _, _, motion in self._track)
