"""Controller translation: dead zones, clipping, signs, keyboard proportional steering.

The gamepad goes through `RecordingX360Gamepad`, a double of vgamepad's VX360Gamepad with
its float -> integer conversions, so assertions are on the reports the driver would get.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import ControlConfig
from pipeline.games.base import Controls
from pipeline.games.io.control import (
    XINPUT_STICK_DEADZONE,
    XINPUT_TRIGGER_DEADZONE,
    ControllerTranslator,
    ControllerValues,
    GamepadOutput,
    KeyboardOutput,
    KeyMap,
    format_controls,
    past_deadzone,
    within_deadzone,
)
from pipeline.games.io.human_input import controls_from_keys, controls_from_pad
from tests.fake_vgamepad import RecordingX360Gamepad

STICK_DZ_RAW = 7849  # XInput: |sThumbLX| <= 7849 is ignored
TRIGGER_DZ_RAW = 30  # XInput: a trigger <= 30 is ignored


def pad_for(**cfg: float) -> tuple[GamepadOutput, RecordingX360Gamepad]:
    control = ControlConfig(**cfg)
    pad = RecordingX360Gamepad()
    translator = ControllerTranslator(control.stick_deadzone, control.trigger_deadzone, control.steering_gain)
    return GamepadOutput(pad, translator), pad


def test_defaults_are_xinputs_dead_zones() -> None:
    control = ControlConfig()
    assert control.stick_deadzone == pytest.approx(XINPUT_STICK_DEADZONE) == pytest.approx(STICK_DZ_RAW / 32767)
    assert control.trigger_deadzone == pytest.approx(XINPUT_TRIGGER_DEADZONE)


@pytest.mark.parametrize(
    ("value", "dz", "expected"),
    [(0.0, 0.24, 0.0), (1.0, 0.24, 1.0), (-1.0, 0.24, -1.0), (0.5, 0.2, 0.6), (-0.5, 0.2, -0.6),
     (1e-6, 0.2, 0.2), (3.0, 0.2, 1.0), (-7.0, 0.2, -1.0), (math.nan, 0.2, 0.0), (math.inf, 0.2, 0.0)],
)
def test_past_deadzone(value: float, dz: float, expected: float) -> None:
    assert past_deadzone(value, dz) == pytest.approx(expected, abs=1e-6)


def test_neutral_sends_exact_zeros() -> None:
    out, pad = pad_for()
    translated = out.apply(Controls(0.0, 0.0))
    assert pad.reports[-1].sThumbLX == 0 and pad.reports[-1].bRightTrigger == 0 and pad.reports[-1].bLeftTrigger == 0
    assert translated == Controls(0.0, 0.0)


@pytest.mark.parametrize("steer", [0.01, 0.1, 0.3])
def test_small_steering_moves_past_the_stick_dead_zone_with_the_right_sign(steer: float) -> None:
    out, pad = pad_for()
    out.apply(Controls(0.0, steer))
    assert pad.reports[-1].sThumbLX > STICK_DZ_RAW  # right = stick x > 0, beyond what XInput ignores
    out.apply(Controls(0.0, -steer))
    assert pad.reports[-1].sThumbLX < -STICK_DZ_RAW
    assert pad.reports[-1].sThumbLY == 0


@pytest.mark.parametrize("accel", [0.01, 0.2, 0.7])
def test_throttle_goes_to_right_trigger_braking_to_left(accel: float) -> None:
    out, pad = pad_for()
    out.apply(Controls(accel, 0.0))
    assert pad.reports[-1].bRightTrigger > TRIGGER_DZ_RAW and pad.reports[-1].bLeftTrigger == 0
    out.apply(Controls(-accel, 0.0))
    assert pad.reports[-1].bLeftTrigger > TRIGGER_DZ_RAW and pad.reports[-1].bRightTrigger == 0


def test_out_of_range_predictions_clip_to_full_deflection() -> None:
    out, pad = pad_for()
    out.apply(Controls(5.0, 9.0))
    assert (pad.reports[-1].bRightTrigger, pad.reports[-1].sThumbLX) == (255, 32767)
    out.apply(Controls(-5.0, -9.0))
    assert (pad.reports[-1].bLeftTrigger, pad.reports[-1].sThumbLX) == (255, -32767)


def test_exact_mapping_and_translated_values_for_the_console() -> None:
    out, pad = pad_for(stick_deadzone=0.2, trigger_deadzone=0.1)
    translated = out.apply(Controls(0.5, -0.5))
    assert pad.reports[-1].sThumbLX == round(-0.6 * 32767)
    assert pad.reports[-1].bRightTrigger == round(0.55 * 255)
    assert translated.steering == pytest.approx(-0.6) and translated.acceleration_braking == pytest.approx(0.55)
    assert format_controls(Controls(0.5, -0.12), Controls(0.55, -0.33)) == (
        "acceleration_braking 0.50 [0.55]  steering -0.12 [-0.33]"
    )
    assert format_controls({"steering": -0.12}, None) == "steering -0.12"


def test_steering_gain_scales_before_the_dead_zone_and_still_clips() -> None:
    out, pad = pad_for(stick_deadzone=0.0, steering_gain=2.0)
    out.apply(Controls(0.0, 0.25))
    assert pad.reports[-1].sThumbLX == round(0.5 * 32767)
    out.apply(Controls(0.0, 0.9))
    assert pad.reports[-1].sThumbLX == 32767


def test_neutral_and_close_release_everything() -> None:
    out, pad = pad_for()
    out.apply(Controls(1.0, 1.0))
    out.close()
    assert pad.reports[-1] == type(pad.reports[-1])()


@given(st.floats(-1, 1), st.floats(-1, 1), st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.5, 2.0))
def test_inverse_undoes_translate(accel: float, steer: float, sdz: float, tdz: float, gain: float) -> None:
    translator = ControllerTranslator(sdz, tdz, gain)
    back = translator.inverse(translator.translate(Controls(accel, steer)))
    assert back.acceleration_braking == pytest.approx(accel, abs=1e-6)
    assert back.steering == pytest.approx(max(-1 / gain, min(1 / gain, steer)), abs=1e-6)


def test_human_pad_inside_the_dead_zone_reads_as_zero_and_full_as_one() -> None:
    translator = ControllerTranslator()
    assert controls_from_pad(TRIGGER_DZ_RAW, TRIGGER_DZ_RAW, STICK_DZ_RAW, translator) == Controls(0.0, 0.0)
    full = controls_from_pad(0, 255, 32767, translator)
    assert full == Controls(1.0, 1.0)
    left_brake = controls_from_pad(255, 0, -32768, translator)
    assert left_brake == Controls(-1.0, -1.0)
    assert within_deadzone(0.62, 0.24) == pytest.approx(0.5)


def test_human_keys() -> None:
    keys = KeyMap()
    assert controls_from_keys({"w": True, "d": True}, keys) == Controls(1.0, 1.0)
    assert controls_from_keys({"s": True, "a": True}, keys) == Controls(-1.0, -1.0)
    assert controls_from_keys({"a": True, "d": True}, keys) == Controls(0.0, 0.0)


# -- keyboard output (seed 004) ------------------------------------------------------------


class RecordingKeySender:
    """A key sender double: records (event, key) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def press(self, key: str) -> None:
        with self.lock:
            self.events.append(("press", key))

    def release(self, key: str) -> None:
        with self.lock:
            self.events.append(("release", key))

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_keyboard_steering_press_lasts_interval_times_delta() -> None:
    sender, clock = RecordingKeySender(), FakeClock()
    out = KeyboardOutput(sender, threshold=0.5, clock=clock)
    try:
        out.apply(Controls(0.0, 0.0))  # first prediction: sets the interval reference
        clock.now = 0.1
        translated = out.apply(Controls(0.0, 0.4))  # interval 0.1 s -> hold 'd' for 0.04 s
        assert translated == Controls(0.0, 0.4)
        assert out.held() == {"d"}
        out.release_due(0.139)
        assert out.held() == {"d"}
        out.release_due(0.141)
        assert out.held() == set()
        clock.now = 0.2
        out.apply(Controls(0.0, -0.5))  # left = 'a'
        assert out.held() == {"a"}
        out.release_due(0.2 + 0.05 + 1e-6)
        assert sender.events == [("press", "d"), ("release", "d"), ("press", "a"), ("release", "a")]
    finally:
        out.close()


def test_keyboard_full_steering_stays_down_and_switching_sides_releases_first() -> None:
    sender, clock = RecordingKeySender(), FakeClock()
    out = KeyboardOutput(sender, clock=clock)
    try:
        for i in range(3):
            clock.now = i / 30
            out.apply(Controls(0.0, 1.0))
            out.release_due(clock.now + 1 / 30 + 0.001)  # the next prediction is due: still held
        assert sender.events == [("press", "d")]
        out.apply(Controls(0.0, -1.0))
        assert sender.events[-2:] == [("release", "d"), ("press", "a")]
    finally:
        out.close()
    assert out.held() == set()
    assert sender.events[-1] == ("release", "a")


def test_keyboard_throttle_is_thresholded_to_full_presses() -> None:
    sender = RecordingKeySender()
    out = KeyboardOutput(sender, threshold=0.5, clock=FakeClock())
    try:
        assert out.apply(Controls(0.6, 0.0)).acceleration_braking == 1.0
        assert out.held() == {"w"}
        out.apply(Controls(0.7, 0.0))
        assert out.apply(Controls(0.3, 0.0)).acceleration_braking == 0.0
        assert out.held() == set()
        assert out.apply(Controls(-0.9, 0.0)).acceleration_braking == -1.0
        assert out.held() == {"s"}
        assert sender.events == [("press", "w"), ("release", "w"), ("press", "s")]
    finally:
        out.close()


def test_keyboard_release_thread_lets_go_on_the_real_clock() -> None:
    sender = RecordingKeySender()
    out = KeyboardOutput(sender)
    try:
        out.apply(Controls(0.0, 0.5), interval_s=0.05)
        assert out.held() == {"d"}
        deadline = time.monotonic() + 2.0
        while out.held() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert out.held() == set()  # released by the background thread, nobody else
        assert sender.events == [("press", "d"), ("release", "d")]
    finally:
        out.close()


def test_controller_values_as_controls() -> None:
    assert ControllerValues(0.3, 0.0, 0.8).as_controls() == Controls(-0.8, 0.3)


def test_display_for_the_player_console_follows_the_output_kind() -> None:
    pad = ControllerTranslator.from_config(ControlConfig(stick_deadzone=0.2, trigger_deadzone=0.1))
    shown = pad.display(Controls(0.5, -0.5))
    assert shown == {"acceleration_braking": pytest.approx(0.55), "steering": pytest.approx(-0.6)}
    keys = ControllerTranslator.from_config(ControlConfig(output="keyboard", keyboard_threshold=0.4))
    assert keys.display(Controls(0.45, -0.3)) == {"acceleration_braking": 1.0, "steering": -0.3}
    assert keys.display(Controls(-0.3, 0.0)) == {"acceleration_braking": 0.0, "steering": 0.0}
