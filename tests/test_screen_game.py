"""The `screen` backend on a real X window: frames, controller output, human driver, Unstuck."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.games.base import Controls, Environment, Game, load_game
from pipeline.games.screen import Pacer, ScreenGame
from tests.fake_vgamepad import RecordingX360Gamepad
from tests.xwindow import ImageWindow, x_display  # noqa: F401 - fixture

W, H = 320, 240
PAD = "tests.fake_vgamepad:RecordingX360Gamepad"


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def window(x_display: str) -> Iterator[ImageWindow]:  # noqa: F811
    win = ImageWindow("Some Racing Game", W, H, x=100, y=80)
    win.show(frame(0))
    yield win
    win.close()


def make(**options: Any) -> ScreenGame:
    opts: dict[str, Any] = {"window": "Some Racing Game", "gamepad": PAD, "pace": False}
    opts.update(options)
    game = load_game("screen", hood_size=(W, H), cinematic_size=(160, 120), fps=30.0, realtime=False, **opts)
    assert isinstance(game, ScreenGame) and isinstance(game, Game)
    return game


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"game.options.windw: unknown option \(allowed: .*window"):
        ScreenGame(windw="x")
    with pytest.raises(ConfigError, match="no NPC autopilot"):
        ScreenGame(window="x", driver="npc")
    with pytest.raises(ConfigError, match="control.stick_deadzone"):
        ScreenGame(window="x", control={"stick_deadzone": 2.0})


def test_observations_without_a_mod(window: ImageWindow) -> None:
    game = make()
    try:
        obs = game.reset(Environment())
        np.testing.assert_array_equal(obs.frame, frame(0))
        assert obs.speed == 0.0 and obs.info["speed_known"] is False and obs.position is None
        assert obs.info["purpose_known"] is False and obs.purpose.tolist() == [0.0, 0.0]
        still = game.step(Controls(0.5, 0.2))
        assert still.info["frame_motion"] == 0.0  # same picture: nothing moved
        window.show(frame(1))
        moving = game.step(Controls(0.5, 0.2))
        np.testing.assert_array_equal(moving.frame, frame(1))
        assert moving.info["frame_motion"] > 50  # two noise frames differ by ~1/3 of 255
        assert moving.game_time > still.game_time
        assert game.cinematic().shape == (120, 160, 3)
    finally:
        game.close()


def test_model_controls_reach_the_virtual_pad(window: ImageWindow) -> None:
    game = make(control={"stick_deadzone": 0.2, "trigger_deadzone": 0.1})
    try:
        game.reset(Environment())
        obs = game.step(Controls(0.5, -0.5))
        pad = game.output.pad  # type: ignore[union-attr]
        assert isinstance(pad, RecordingX360Gamepad)
        assert pad.reports[-1].bRightTrigger == round(0.55 * 255)
        assert pad.reports[-1].sThumbLX == round(-0.6 * 32767)
        assert obs.controls == Controls(0.5, -0.5)
        assert obs.info["translated"]["steering"] == pytest.approx(-0.6)
        game.close()
        assert pad.reports[-1].sThumbLX == 0 and pad.reports[-1].bRightTrigger == 0
    finally:
        game.close()


def test_unstuck_reverses_turning_then_drives_forward_turning_back(window: ImageWindow) -> None:
    game = make(unstuck_reverse_s=0.2, unstuck_forward_s=0.2)
    try:
        game.reset(Environment(episode_seed=3))
        game.step(Controls(1.0, 0.0))
        pad = game.output.pad  # type: ignore[union-attr]
        before = len(pad.reports)
        obs = game.respawn()
        reports = pad.reports[before:]
        reverse = [r for r in reports if r.bLeftTrigger == 255]
        forward = [r for r in reports if r.bRightTrigger == 255]
        assert reverse and forward and reports.index(reverse[-1]) < reports.index(forward[0])
        assert {abs(r.sThumbLX) for r in reverse + forward} == {32767}
        assert np.sign(reverse[0].sThumbLX) == -np.sign(forward[0].sThumbLX)
        assert reports[-1].bLeftTrigger == reports[-1].bRightTrigger == reports[-1].sThumbLX == 0
        assert obs.frame.shape == (H, W, 3)
    finally:
        game.close()


def test_steps_are_paced_by_default_whatever_realtime_says(window: ImageWindow) -> None:
    game = load_game("screen", fps=30.0, realtime=False, window="Some Racing Game", gamepad=PAD)
    try:
        assert game.pace is True and game.realtime is True  # a real game's clock is the wall clock
    finally:
        game.close()


def test_pacer_holds_the_frame_rate_and_rebases_when_late() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    pacer = Pacer(50.0, clock=lambda: now[0], sleep=sleep)
    assert pacer.wait() == 0.0  # the first step sets the schedule
    now[0] += 0.005  # a step that took 5 ms
    pacer.wait()
    assert slept == [0.015]
    now[0] += 0.1  # a step that took 100 ms: four periods past its tick at 0.04
    assert pacer.wait() == pytest.approx(0.08)
    assert pacer.late_steps == 1
    now[0] += 0.001
    pacer.wait()
    assert slept[-1] == 0.019  # re-based on the late step, no burst of catch-up steps


def test_keyboard_output_presses_keys_in_x(window: ImageWindow) -> None:
    from pipeline.games.io.x11 import X11KeyState

    game = make(control={"output": "keyboard", "keyboard_threshold": 0.5}, key_sender="xtest")
    keys = X11KeyState()
    try:
        game.reset(Environment())
        obs = game.step(Controls(0.9, 1.0))
        assert keys.down(["w", "s", "a", "d"]) == {"w": True, "s": False, "a": False, "d": True}
        assert obs.info["translated"] == {"acceleration_braking": 1.0, "steering": 1.0}
        game.step(Controls(-0.9, -1.0))
        assert keys.down(["w", "s", "a", "d"]) == {"w": False, "s": True, "a": True, "d": False}
        game.close()
        assert not any(keys.down(["w", "s", "a", "d"]).values())
    finally:
        game.close()
        keys.close()


def test_human_driver_is_recorded_from_the_keyboard(window: ImageWindow) -> None:
    from pipeline.games.io.x11 import XTestKeySender

    game = make(driver="human", human_input="keyboard")
    person = XTestKeySender()
    try:
        game.reset(Environment())
        assert game.step(None).controls == Controls(0.0, 0.0)
        person.press("w")
        person.press("a")
        time.sleep(0.02)
        obs = game.step(None)
        assert obs.controls == Controls(1.0, -1.0) and obs.info["driver"] == "human"
        assert game.output is None  # recording a person never creates a virtual pad
        person.release("w")
        person.press("s")
        time.sleep(0.02)
        assert game.step(None).controls == Controls(-1.0, -1.0)
    finally:
        for key in ("w", "a", "s"):
            person.release(key)
        person.close()
        game.close()


def test_stuck_without_position_from_frame_motion(window: ImageWindow) -> None:
    from pipeline.play.unstuck import StuckDetector

    game = make()
    detector = StuckDetector(min_displacement_m=2.0, window_s=0.3, grace_s=0.0)
    try:
        detector.reset(game.reset(Environment()))
        for _ in range(200):  # the picture never changes: a car pressed against a wall
            if detector.update(game.step(Controls(1.0, 0.0))):
                break
            time.sleep(0.01)
        assert detector.stuck
        detector.reset(game.step(Controls(1.0, 0.0)))
        for i in range(60):  # the world moves past the hood camera
            window.show(frame(100 + i))
            detector.update(game.step(Controls(1.0, 0.0)))
            time.sleep(0.01)
        assert not detector.stuck
    finally:
        game.close()
