"""Recording a human driver instead of the NPC: read the pad or keyboard while collecting.

With `driver = "human"` a real backend's `step(None)` returns the human's controls as
`Observation.controls`, so a collector records people the same way it records the NPC.
A pad's raw values include the game's dead zones; `ControllerTranslator.inverse` maps
them back to prediction space, so a model trained on them predicts what the translator
expects. The keyboard gives full presses (+-1), as the keys do in the game.

Readers: `GamepadReader` over XInput (Windows), `KeyboardReader` over XQueryKeymap
(Linux/X11) or GetAsyncKeyState (Windows).
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import structlog

from pipeline.errors import ConfigError, GameError
from pipeline.games.base import Controls
from pipeline.games.io.control import ControllerTranslator, ControllerValues, KeyMap
from pipeline.games.io.devices import load_object

log = structlog.get_logger(__name__)

HUMAN_INPUTS = ("auto", "xinput", "keyboard")


class HumanReader(Protocol):
    """The human's current controls, polled once per game step."""

    def read(self) -> Controls: ...

    def close(self) -> None: ...


class KeyState(Protocol):
    def down(self, keys: list[str]) -> dict[str, bool]: ...

    def close(self) -> None: ...


class PadState(Protocol):
    def read(self) -> tuple[int, int, int, int]: ...


def controls_from_keys(down: dict[str, bool], keys: KeyMap) -> Controls:
    """Full presses: forward - back, right - left (both keys = they cancel, as in the game)."""
    accel = float(down.get(keys.forward, False)) - float(down.get(keys.back, False))
    steer = float(down.get(keys.right, False)) - float(down.get(keys.left, False))
    return Controls(accel, steer)


def controls_from_pad(
    left_trigger: int, right_trigger: int, stick_x: int, translator: ControllerTranslator
) -> Controls:
    """XInput raw values (triggers 0..255, stick -32768..32767) -> prediction space."""
    values = ControllerValues(
        stick_x=max(-1.0, min(1.0, stick_x / 32767)),
        right_trigger=right_trigger / 255,
        left_trigger=left_trigger / 255,
    )
    return translator.inverse(values)


class KeyboardReader:
    """The human's keyboard, as the drive keys of `keys`."""

    def __init__(self, state: KeyState, keys: KeyMap | None = None) -> None:
        self.state = state
        self.keys = keys or KeyMap()
        self._names = [self.keys.forward, self.keys.back, self.keys.left, self.keys.right]

    def read(self) -> Controls:
        return controls_from_keys(self.state.down(self._names), self.keys)

    def close(self) -> None:
        self.state.close()


class GamepadReader:
    """The human's pad; a disconnected pad reads as neutral (logged once), not as an error."""

    def __init__(self, pad: PadState, translator: ControllerTranslator) -> None:
        self.pad = pad
        self.translator = translator
        self._warned = False

    def read(self) -> Controls:
        try:
            lt, rt, lx, _ly = self.pad.read()
        except GameError as exc:
            if not self._warned:
                log.warning("human.pad_unavailable", error=str(exc))
                self._warned = True
            return Controls()
        self._warned = False
        return controls_from_pad(lt, rt, lx, self.translator)

    def close(self) -> None:
        pass


def _keyboard_state() -> Any:
    if sys.platform == "win32":
        from pipeline.games.io.win32 import WindowsKeyState

        return WindowsKeyState()
    from pipeline.games.io.x11 import X11KeyState

    return X11KeyState()


def make_human_reader(
    spec: str, translator: ControllerTranslator, keys: KeyMap | None = None, pad_index: int = 0
) -> HumanReader:
    """auto = the XInput pad on Windows when one is connected, else the keyboard."""
    if spec == "auto":
        spec = "keyboard"
        if sys.platform == "win32":
            from pipeline.games.io.win32 import XInputPad

            try:
                XInputPad(pad_index).read()
                spec = "xinput"
            except GameError:
                pass
    if spec == "keyboard":
        reader: HumanReader = KeyboardReader(_keyboard_state(), keys)
    elif spec == "xinput":
        from pipeline.games.io.win32 import XInputPad

        reader = GamepadReader(XInputPad(pad_index), translator)
    else:
        reader = load_object(spec, "human_input")
        if not callable(getattr(reader, "read", None)):
            raise ConfigError(f"game.options.human_input: {spec!r} has no read()")
    log.info("human.reader", reader=spec)
    return reader
