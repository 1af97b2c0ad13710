"""The context builder: one sample's inputs from recent ticks, the same for collector and player."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.collect.context import ContextBuilder
from pipeline.games.base import Controls, Observation
from pipeline.wire.schema import ContextSpec

SPEC = ContextSpec(fps=10.0, frames=3, frame_stride_s=0.2, history=2, history_stride_s=0.1, label_shift_s=0.1)


def tick(t: int) -> Observation:
    """Tick t: its number in the frame, its speed and controls, so the context can be read back."""
    frame = np.full((2, 2, 3), t, np.uint8)
    return Observation(frame, speed=float(t), purpose=np.array([100.0 - t, 0.1], np.float32),
                       controls=Controls(t / 100, -t / 100), game_time=t / 10)


def test_frames_and_history_are_taken_at_their_strides_oldest_first() -> None:
    builder = ContextBuilder(SPEC)
    for t in range(10):
        builder.push(tick(t))
    row = builder.context(lag=1)  # the collector labels tick 8 with what came after it
    assert row["frames"][:, 0, 0, 0].tolist() == [4, 6, 8]  # stride 0.2 s = 2 ticks
    assert row["history"][:, 2].tolist() == [6.0, 7.0]  # the speeds 2 and 1 ticks before "now"
    assert row["history"][1, :2].tolist() == pytest.approx([0.07, -0.07])
    assert float(row["speed"]) == 8.0 and float(row["game_time"]) == pytest.approx(0.8)
    assert row["controls"].tolist() == pytest.approx([0.08, -0.08])


def test_ready_waits_for_the_lookback_and_early_contexts_repeat_the_first_tick() -> None:
    builder = ContextBuilder(SPEC)
    builder.push(tick(0))
    builder.push(tick(1))
    assert not builder.ready(lag=1) and SPEC.lookback == 4
    assert builder.context()["frames"][:, 0, 0, 0].tolist() == [0, 0, 1]  # the player drives from its first frame
    for t in range(2, 6):
        builder.push(tick(t))
    assert builder.ready(lag=1)


def test_a_reset_forgets_the_past() -> None:
    builder = ContextBuilder(SPEC)
    for t in range(6):
        builder.push(tick(t))
    builder.reset()
    assert len(builder) == 0
    with pytest.raises(IndexError):
        builder.context()
