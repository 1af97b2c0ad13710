"""The `screen` backend: any game window, captured with mss, driven by gamepad or keys.

There is no mod, so the game can tell Charles nothing: speed is reported as 0.0 with
`info["speed_known"] = False` (use a config with `inputs.speed = false`), Purpose as
zeros with `info["purpose_known"] = False`, position as None. Stuck detection cannot use
displacement, so every observation carries `info["frame_motion"]`: the mean absolute
difference between this hood frame and the previous one, in grey levels 0..255 (255 on
the first frame of an episode). A car pushing against a wall shows ~0 motion while the
world stands still; `pipeline.play.unstuck.StuckDetector` calls the car stuck when every frame
of its window stays below `FRAME_MOTION_STILL` (2.0), which replaces "moved less than N m".
Unstuck (`respawn`) cannot teleport: it reverses while turning, then drives forward
turning the other way.

`GTA5Game` extends this class with the mod bridge (speed, Purpose, NPC, teleport).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import structlog

from pipeline.errors import ConfigError
from pipeline.games.base import Capabilities, Controls, Environment, Observation
from pipeline.games.capture import ScreenCapture
from pipeline.games.io.control import (
    ControllerTranslator,
    ControlOutput,
    GamepadOutput,
    KeyboardOutput,
)
from pipeline.games.io.devices import make_gamepad, make_key_sender
from pipeline.games.io.human_input import HumanReader, make_human_reader
from pipeline.games.options import ScreenOptions, parse_options

log = structlog.get_logger(__name__)


def controls_dict(controls: Controls) -> dict[str, float]:
    """Controls as {name: value}, the shape the Player console and telemetry use."""
    return {"acceleration_braking": controls.acceleration_braking, "steering": controls.steering}


class Pacer:
    """Holds steps to the game's frame rate; a late step re-bases instead of bursting."""

    def __init__(
        self,
        fps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.period = 1.0 / fps
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self.late_steps = 0

    def reset(self) -> None:
        self._next = None

    def wait(self) -> float:
        """Sleep until the next tick; returns how late this step was (0.0 when on time)."""
        now = self._clock()
        if self._next is None:
            self._next = now + self.period
            return 0.0
        late = now - self._next
        if late < 0:
            self._sleep(-late)
            late = 0.0
        elif late > self.period:
            self.late_steps += 1
            self._next = now  # re-base: never try to catch up with a burst of steps
        self._next += self.period
        return late


def frame_motion(previous: np.ndarray | None, grey: np.ndarray) -> float:
    """Mean absolute grey-level change between two frames, 0..255 (255 when there is no previous)."""
    if previous is None or previous.shape != grey.shape:
        return 255.0
    return float(cv2.absdiff(grey, previous).mean())


class ScreenGame:
    """A game window as a `Game`: capture, pacing, controller output, human driver."""

    backend = "screen"
    options_model: type[ScreenOptions] = ScreenOptions
    #: Without a mod nothing can be set, labelled or teleported; stuck is seen in the frames.
    capabilities = Capabilities(incidents=("stuck",))

    def __init__(
        self,
        hood_size: tuple[int, int] = (160, 120),
        cinematic_size: tuple[int, int] = (640, 360),
        fps: float = 30.0,
        realtime: bool = True,
        **options: Any,
    ) -> None:
        self.opts = parse_options(self.options_model, self.backend, options)
        self._check_options()
        self.fps = float(fps)
        # A real game's clock is the wall clock: steps are paced to fps (option `pace`), and
        # `realtime=False` (the simulator's fast mode, which collectors ask for) cannot apply.
        self.realtime = True
        self.pace = self.opts.pace
        if not realtime:
            log.debug("screen.realtime_ignored", reason="a real game runs in real time", pace=self.opts.pace)
        self.hood_size = (int(hood_size[0]), int(hood_size[1]))
        self.cinematic_size = (int(cinematic_size[0]), int(cinematic_size[1]))
        ctl = self.opts.control
        self.translator = ControllerTranslator.from_config(ctl)
        self.capture = ScreenCapture(
            self.hood_size, self.opts.window, self.opts.region, self.opts.monitor, self.opts.relocate_s
        )
        self.pacer = Pacer(self.fps)
        self.output: ControlOutput | None = None  # created on the first model step
        self.human: HumanReader | None = None  # created on the first human step
        self._rng = random.Random(0)
        self._prev_grey: np.ndarray | None = None
        self._t0 = time.monotonic()
        self.last_frame: np.ndarray | None = None

    def _check_options(self) -> None:
        if self.opts.driver == "npc":
            raise ConfigError(
                "game.options.driver: the 'screen' backend has no NPC autopilot (no mod); "
                "use driver = 'human' to record a person, or the 'gta5' backend"
            )
        if not self.opts.window and self.opts.region is None:
            log.warning("screen.whole_monitor", monitor=self.opts.monitor, hint="set game.options.window")

    # -- devices ---------------------------------------------------------------------------

    def _output(self) -> ControlOutput:
        """The controller, created lazily: a human recording session never creates one."""
        if self.output is None:
            ctl = self.opts.control
            if ctl.output == "keyboard":
                self.output = KeyboardOutput(
                    make_key_sender(self.opts.key_sender),
                    threshold=ctl.keyboard_threshold,
                    steering_gain=ctl.steering_gain,
                    keys=self.opts.keys.keymap(),
                    default_interval_s=1.0 / self.fps,
                )
            else:
                self.output = GamepadOutput(make_gamepad(self.opts.gamepad), self.translator)
        return self.output

    def _human(self) -> HumanReader:
        if self.human is None:
            self.human = make_human_reader(
                self.opts.human_input, self.translator, self.opts.keys.keymap(), self.opts.pad_index
            )
        return self.human

    # -- the Game protocol -----------------------------------------------------------------

    def reset(self, env: Environment) -> Observation:
        """A new episode; without a mod the environment cannot be set, only noted."""
        log.info("screen.reset", note="no mod: environment not applied", env=env.to_dict())
        self._rng = random.Random(env.episode_seed)
        self._neutral()
        self._t0 = time.monotonic()
        self.pacer.reset()
        self._prev_grey = None
        return self._observe(Controls(), None, driver="reset")

    def step(self, controls: Controls | None = None) -> Observation:
        """Apply controls (None: the human drives), wait for the 1/fps tick, capture, observe."""
        applied, translated, driver = self._drive(controls)
        late = self.pacer.wait() if self.pace else 0.0
        obs = self._observe(applied, translated, driver)
        obs.info["late_s"] = late
        return obs

    def respawn(self) -> Observation:
        """Unstuck without a teleport: reverse while turning, then forward turning back."""
        if self.opts.driver == "human" and self.output is None:
            log.info("screen.respawn_skipped", reason="a human drives")
        else:
            turn = self._rng.choice((-1.0, 1.0))
            self._manoeuvre(Controls(-1.0, turn), self.opts.unstuck_reverse_s)
            self._manoeuvre(Controls(1.0, -turn), self.opts.unstuck_forward_s)
            self._neutral()
        self.pacer.reset()
        self._prev_grey = None
        obs = self._observe(Controls(), None, driver="respawn")
        obs.info["respawned"] = True
        return obs

    def _manoeuvre(self, controls: Controls, seconds: float) -> None:
        end = time.monotonic() + seconds
        output = self._output()
        while time.monotonic() < end:
            output.apply(controls, 1.0 / self.fps)
            time.sleep(min(1.0 / self.fps, max(0.0, end - time.monotonic())))

    def cinematic(self) -> np.ndarray:
        """The full window at the cinematic size (the game shows one camera at a time)."""
        return self.capture.latest(self.cinematic_size)

    def close(self) -> None:
        self._neutral()
        for part in (self.output, self.human, self.capture):
            if part is not None:
                try:
                    part.close()
                except Exception as exc:  # noqa: BLE001 - closing must release every part
                    log.warning("screen.close_failed", part=type(part).__name__, error=repr(exc))
        self.output = self.human = None

    # -- hooks GTA5Game extends --------------------------------------------------------------

    def _neutral(self) -> None:
        if self.output is not None:
            self.output.neutral()

    def _drive(self, controls: Controls | None) -> tuple[Controls, Controls | None, str]:
        """Send controls; returns (applied, translated controller values, who drove)."""
        if controls is None:
            return self._human().read(), None, "human"
        translated = self._output().apply(controls)
        return controls, translated, "model"

    def _observe(self, applied: Controls, translated: Controls | None, driver: str) -> Observation:
        frame = self.capture.grab()
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        motion = frame_motion(self._prev_grey, grey)
        self._prev_grey = grey
        self.last_frame = frame
        info: dict[str, Any] = {
            "speed_known": False,
            "purpose_known": False,
            "frame_motion": motion,
            "driver": driver,
            "translated": None if translated is None else controls_dict(translated),
        }
        return Observation(
            frame=frame,
            speed=0.0,
            purpose=np.zeros(2, dtype=np.float32),
            controls=applied,
            game_time=time.monotonic() - self._t0,
            position=None,
            info=info,
        )
