"""Stuck detection by displacement over a window, after a grace period; by picture motion
where the game cannot tell a position."""

from __future__ import annotations

import numpy as np

from pipeline.games.base import Controls, Observation
from pipeline.play.unstuck import StuckDetector


def obs(t: float, x: float | None, motion: float | None = None) -> Observation:
    info = {} if motion is None else {"frame_motion": motion}
    return Observation(np.zeros((1, 1, 3), np.uint8), 0.0, np.zeros(2, np.float32), Controls(), t,
                       position=None if x is None else (x, 0.0), info=info)


def drive(detector: StuckDetector, seconds: float, speed: float, start: float = 0.0,
          motion: float | None = None, positions: bool = True) -> bool:
    stuck = False
    for i in range(int(seconds * 10)):
        t = start + i / 10
        stuck = detector.update(obs(t, speed * t if positions else None, motion))
    return stuck


def test_a_car_that_moves_too_little_over_the_window_is_stuck_after_the_grace() -> None:
    detector = StuckDetector(min_displacement_m=2.0, window_s=3.0, grace_s=2.0)
    assert not drive(detector, 4.9, speed=0.1)  # within grace + window
    assert drive(detector, 1.0, speed=0.1, start=4.9)
    detector.reset(obs(6.0, 0.6))
    assert not detector.stuck  # a respawn starts a new grace period


def test_a_moving_car_is_never_stuck() -> None:
    assert not drive(StuckDetector(2.0, 3.0, grace_s=0.0), 20.0, speed=5.0)


def test_without_positions_a_still_picture_is_stuck_and_a_moving_one_is_not() -> None:
    assert drive(StuckDetector(2.0, 3.0, grace_s=0.0), 5.0, 0.0, motion=0.5, positions=False)
    assert not drive(StuckDetector(2.0, 3.0, grace_s=0.0), 5.0, 0.0, motion=9.0, positions=False)
