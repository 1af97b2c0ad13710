"""Controller translation shared by every real backend: predictions -> what the game receives.

A game's controller has dead zones: GTA5 ignores a stick deflection below ~0.24 and a
trigger below 30/255 (XInput defaults), so a model that predicts steering 0.1 would not
steer at all. `ControllerTranslator` maps a prediction v != 0 to
`sign(v) * (dz + (1 - dz) * |v|)`, i.e. onto the part of the axis the game responds to,
and `inverse` undoes it for recording a human's controller. `GamepadOutput` sends the
result to a vgamepad `VX360Gamepad` (or anything with its four methods);
`KeyboardOutput` drives with keys as seed 004 does: steering keys held for
`interval x |left - right|`, forward/back thresholded to full presses.

Sign conventions: steering > 0 = right = stick x > 0; acceleration_braking > 0 = right
trigger, < 0 = left trigger (brake, then reverse).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import structlog

from pipeline.config import ControlConfig
from pipeline.games.base import Controls

log = structlog.get_logger(__name__)

#: XInput's default dead zones (XINPUT_GAMEPAD_LEFT_THUMB_DEADZONE, _TRIGGER_THRESHOLD).
XINPUT_STICK_DEADZONE = 7849 / 32767
XINPUT_TRIGGER_DEADZONE = 30 / 255


def _finite(value: float) -> float:
    """NaN/inf from a diverged model must not reach the controller: treat them as 0."""
    return float(value) if math.isfinite(value) else 0.0


def past_deadzone(value: float, deadzone: float) -> float:
    """Map v in [-1, 1] onto the responsive part of an axis: 0 stays 0, any v != 0 moves."""
    v = min(1.0, max(-1.0, _finite(value)))
    if v == 0.0:
        return 0.0
    return math.copysign(deadzone + (1.0 - deadzone) * abs(v), v)


def within_deadzone(value: float, deadzone: float) -> float:
    """Inverse of `past_deadzone`: a raw axis value as the game understands it (dead zone = 0)."""
    v = min(1.0, max(-1.0, _finite(value)))
    if abs(v) <= deadzone or deadzone >= 1.0:
        return 0.0
    return math.copysign((abs(v) - deadzone) / (1.0 - deadzone), v)


@dataclass(frozen=True)
class ControllerValues:
    """What goes to a gamepad: left stick x in [-1, 1], triggers in [0, 1]."""

    stick_x: float = 0.0
    right_trigger: float = 0.0
    left_trigger: float = 0.0

    def as_controls(self) -> Controls:
        """The same values in control space (accel = RT - LT), for the Player console."""
        return Controls(self.right_trigger - self.left_trigger, self.stick_x)


class ControllerTranslator:
    """Predictions (Controls in [-1, 1]) <-> gamepad values past the game's dead zones."""

    def __init__(
        self,
        stick_deadzone: float = XINPUT_STICK_DEADZONE,
        trigger_deadzone: float = XINPUT_TRIGGER_DEADZONE,
        steering_gain: float = 1.0,
    ) -> None:
        for name, dz in (("stick_deadzone", stick_deadzone), ("trigger_deadzone", trigger_deadzone)):
            if not 0.0 <= dz < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {dz}")
        if steering_gain <= 0:
            raise ValueError(f"steering_gain must be > 0, got {steering_gain}")
        self.stick_deadzone = float(stick_deadzone)
        self.trigger_deadzone = float(trigger_deadzone)
        self.steering_gain = float(steering_gain)
        self.output = "gamepad"
        self.keyboard_threshold = 0.5

    @classmethod
    def from_config(cls, control: ControlConfig) -> ControllerTranslator:
        """Built from the [control] section (keeps its output kind for `display`)."""
        translator = cls(control.stick_deadzone, control.trigger_deadzone, control.steering_gain)
        translator.output = control.output
        translator.keyboard_threshold = control.keyboard_threshold
        return translator

    def display(self, controls: Controls) -> dict[str, float]:
        """What the controller receives for these controls, per control name (Player console).

        gamepad: accel = right - left trigger, steering = stick x (past the dead zones);
        keyboard: accel in {-1, 0, 1} (thresholded), steering = share of the interval held.
        """
        if self.output == "keyboard":
            accel = _finite(controls.acceleration_braking)
            steer = min(1.0, max(-1.0, _finite(controls.steering) * self.steering_gain))
            t = self.keyboard_threshold
            return {"acceleration_braking": 1.0 if accel > t else (-1.0 if accel < -t else 0.0), "steering": steer}
        values = self.translate(controls).as_controls()
        return {"acceleration_braking": values.acceleration_braking, "steering": values.steering}

    def translate(self, controls: Controls) -> ControllerValues:
        """Clip, apply the steering gain, and push every non-zero value past its dead zone."""
        steer = _finite(controls.steering) * self.steering_gain
        accel = _finite(controls.acceleration_braking)
        stick = past_deadzone(steer, self.stick_deadzone)
        trigger = past_deadzone(abs(accel), self.trigger_deadzone) if accel else 0.0
        if accel > 0:
            return ControllerValues(stick, trigger, 0.0)
        return ControllerValues(stick, 0.0, trigger)

    def inverse(self, values: ControllerValues) -> Controls:
        """What a human's pad means in prediction space: strip dead zones and the gain."""
        steer = within_deadzone(values.stick_x, self.stick_deadzone) / self.steering_gain
        accel = within_deadzone(values.right_trigger, self.trigger_deadzone) - within_deadzone(
            values.left_trigger, self.trigger_deadzone
        )
        return Controls(min(1.0, max(-1.0, accel)), min(1.0, max(-1.0, steer)))


@runtime_checkable
class GamepadLike(Protocol):
    """The part of vgamepad's `VX360Gamepad` that Charles uses (float setters + update)."""

    def left_joystick_float(self, x_value_float: float, y_value_float: float) -> None: ...

    def right_trigger_float(self, value_float: float) -> None: ...

    def left_trigger_float(self, value_float: float) -> None: ...

    def update(self) -> None: ...


class GamepadOutput:
    """Sends translated predictions to a virtual Xbox 360 pad: left stick + both triggers."""

    def __init__(self, pad: GamepadLike, translator: ControllerTranslator) -> None:
        self.pad = pad
        self.translator = translator
        self.last = ControllerValues()

    def apply(self, controls: Controls, interval_s: float | None = None) -> Controls:
        """Send one prediction; returns the translated values (control space) for the console."""
        values = self.translator.translate(controls)
        self.send(values)
        return values.as_controls()

    def send(self, values: ControllerValues) -> None:
        """Write raw controller values (already past the dead zones) in one report."""
        self.pad.left_joystick_float(values.stick_x, 0.0)
        self.pad.right_trigger_float(values.right_trigger)
        self.pad.left_trigger_float(values.left_trigger)
        self.pad.update()
        self.last = values

    def neutral(self) -> None:
        """Centre the stick and release both triggers (before a teleport, on close)."""
        self.send(ControllerValues())

    def close(self) -> None:
        self.neutral()


class KeySender(Protocol):
    """Presses and releases named keys ('w', 'a', 'up', 'space', ...) in the game window."""

    def press(self, key: str) -> None: ...

    def release(self, key: str) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class KeyMap:
    """Which keys drive: forward/back are thresholded, left/right proportional."""

    forward: str = "w"
    back: str = "s"
    left: str = "a"
    right: str = "d"


class KeyboardOutput:
    """Seed 004's keyboard driving: proportional steering presses, thresholded throttle.

    Steering: the key for the sign of `steering x gain` is held for
    `interval x |steering|`, where interval is the time since the previous prediction
    (the seed's "time it took to predict"), so the steering averaged over the interval
    equals the prediction. A background thread releases it on time without blocking the
    prediction loop. Forward/back: held while |acceleration_braking| > threshold.
    """

    def __init__(
        self,
        sender: KeySender,
        threshold: float = 0.5,
        steering_gain: float = 1.0,
        keys: KeyMap | None = None,
        default_interval_s: float = 1 / 30,
        max_interval_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.threshold = float(threshold)
        self.steering_gain = float(steering_gain)
        self.keys = keys or KeyMap()
        self.default_interval_s = float(default_interval_s)
        self.max_interval_s = float(max_interval_s)
        self._clock = clock
        self._held: set[str] = set()
        self._release_at: dict[str, float] = {}
        self._last_apply: float | None = None
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._releaser, name="key-release", daemon=True)
        self._thread.start()

    def interval(self, now: float) -> float:
        """Time until the next prediction, estimated by the time since the previous one."""
        last, self._last_apply = self._last_apply, now
        if last is None or now - last > self.max_interval_s:
            return self.default_interval_s
        return max(now - last, 1e-3)

    def apply(self, controls: Controls, interval_s: float | None = None) -> Controls:
        """Press/release keys for one prediction; returns (accel in {-1,0,1}, steering share)."""
        now = self._clock()
        interval = self.interval(now) if interval_s is None else float(interval_s)
        accel = _finite(controls.acceleration_braking)
        steer = min(1.0, max(-1.0, _finite(controls.steering) * self.steering_gain))
        forward, back = accel > self.threshold, accel < -self.threshold
        with self._lock:
            self._set(self.keys.forward, forward)
            self._set(self.keys.back, back)
            if steer == 0.0:
                self._set(self.keys.left, False)
                self._set(self.keys.right, False)
            else:
                key, other = (self.keys.right, self.keys.left) if steer > 0 else (self.keys.left, self.keys.right)
                self._set(other, False)
                self._set(key, True)
                # A full deflection stays down until the next prediction (no flicker between
                # predictions); the safety deadline releases it if predictions stop.
                hold = self.max_interval_s if abs(steer) >= 1.0 else interval * abs(steer)
                self._release_at[key] = now + hold
            self._lock.notify()
        return Controls(1.0 if forward else (-1.0 if back else 0.0), steer)

    def _set(self, key: str, down: bool) -> None:
        """Change one key's state (caller holds the lock); repeated presses are not re-sent."""
        if down and key not in self._held:
            self.sender.press(key)
            self._held.add(key)
        elif not down and key in self._held:
            self.sender.release(key)
            self._held.discard(key)
            self._release_at.pop(key, None)

    def _releaser(self) -> None:
        """Release steering keys at their deadlines; sleeps until the earliest one."""
        with self._lock:
            while not self._closed:
                now = self._clock()
                self.release_due(now)
                timeout = min(self._release_at.values(), default=now + 1.0) - now
                self._lock.wait(timeout=max(timeout, 0.0005))

    def release_due(self, now: float) -> None:
        """Release the steering keys whose press time is over at `now`."""
        with self._lock:
            for key, at in list(self._release_at.items()):
                if at <= now:
                    self._set(key, False)

    def held(self) -> set[str]:
        """Keys currently down (for tests and the console)."""
        with self._lock:
            return set(self._held)

    def neutral(self) -> None:
        """Release every key."""
        with self._lock:
            for key in list(self._held):
                self._set(key, False)
            self._last_apply = None

    def close(self) -> None:
        self.neutral()
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=1.0)


class ControlOutput(Protocol):
    """What a backend drives through: `GamepadOutput` or `KeyboardOutput`."""

    def apply(self, controls: Controls, interval_s: float | None = None) -> Controls: ...

    def neutral(self) -> None: ...

    def close(self) -> None: ...


def _values(values: Controls | Mapping[str, float]) -> dict[str, float]:
    if isinstance(values, Controls):
        return {"acceleration_braking": values.acceleration_braking, "steering": values.steering}
    return {k: float(v) for k, v in values.items()}


def format_controls(raw: Controls | Mapping[str, float], translated: Controls | Mapping[str, float] | None) -> str:
    """The Player console line: raw predictions with the controller values in brackets.

    `format_controls(Controls(0.5, -0.12), Controls(0.56, -0.33))` ->
    `'acceleration_braking 0.50 [0.56]  steering -0.12 [-0.33]'`.
    """
    raw_v = _values(raw)
    out_v = _values(translated) if translated is not None else {}
    parts = []
    for name, value in raw_v.items():
        part = f"{name} {value:.2f}"
        if name in out_v:
            part += f" [{out_v[name]:.2f}]"
        parts.append(part)
    return "  ".join(parts)
