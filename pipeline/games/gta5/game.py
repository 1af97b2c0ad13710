"""`GTA5Game`: the `screen` backend plus the mod bridge, which knows what the screen cannot.

The mod reports speed, position, heading, Purpose and the NPC's controls, sets up the
episode's world (weather, time, car, traffic), switches the NPC autopilot on and off,
switches cameras and teleports for Unstuck. Capture and controller output are the
`screen` backend's (mss + vgamepad by default). A lost bridge is a `GameError` from
`step`/`reset`/`respawn`; the next call reconnects and re-sends the NPC mode and camera.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import structlog

from pipeline.errors import GameError
from pipeline.games.base import WEATHERS, Capabilities, Controls, Environment, Observation
from pipeline.games.capture import to_rgb
from pipeline.games.gta5.bridge import BridgeClient
from pipeline.games.options import GTA5Options
from pipeline.games.screen import ScreenGame

log = structlog.get_logger(__name__)


def _number(state: dict[str, Any], key: str, default: float | None = None) -> float:
    value = state.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GameError(f"bridge: state.{key} must be a finite number, got {value!r}")
    return float(value)


def _vector(state: dict[str, Any], key: str, length: int) -> list[float] | None:
    value = state.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) < length or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value[:length]
    ):
        raise GameError(f"bridge: state.{key} must be a list of {length} numbers, got {value!r:.100}")
    return [float(v) for v in value[:length]]


class GTA5Game(ScreenGame):
    """GTA5 as a `Game` (extra `gta5`): needs the Charles mod running in the game."""

    backend = "gta5"
    options_model = GTA5Options
    #: What the mod's `setup` applies (docs/game-bridge.md); its autopilot drives but cannot
    #: label a tick someone else drove, so no expert labels (no DAgger).
    capabilities = Capabilities(
        environment={"weather": WEATHERS, "time_of_day": (0.0, 24.0), "car": ("sedan", "sports", "truck"),
                     "traffic_density": (0.0, 1.0), "spawn": (), "npc_style": ("calm", "normal", "aggressive")},
        purpose=True,
        respawn=True,
        incidents=("collision", "stuck"),
    )

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        opts: GTA5Options = self.opts  # type: ignore[assignment]
        self.bridge = BridgeClient(
            opts.host, opts.port, opts.connect_timeout_s, opts.reply_timeout_s, opts.heartbeat_s
        )
        self._npc: tuple[bool, int] | None = None  # (enabled, bridge generation it was sent on)
        self._camera_gen = -1
        self._style = "normal"
        self.last_state: dict[str, Any] = {}
        self._chase: np.ndarray | None = None  # cinematic = "switch": the latest chase view
        self._chase_at = -float("inf")

    def _check_options(self) -> None:
        """Every driver is allowed here: the mod has an NPC autopilot."""

    # -- mod-side modes, re-sent after a reconnect -----------------------------------------

    def _ensure_npc(self, enabled: bool) -> None:
        if self._npc == (enabled, self.bridge.generation) and self.bridge.connected:
            return
        if enabled:
            self._neutral()  # our virtual pad must not fight the autopilot
        self.bridge.call("npc", enabled=enabled, style=self._style)
        self._npc = (enabled, self.bridge.generation)

    def _ensure_hood_camera(self) -> None:
        if self._camera_gen != self.bridge.generation or not self.bridge.connected:
            self.bridge.call("camera", view="hood")
            self._camera_gen = self.bridge.generation

    # -- the Game protocol -----------------------------------------------------------------

    def reset(self, env: Environment) -> Observation:
        """Set the world up through the mod, pick a Purpose target, hand the car to the driver."""
        opts: GTA5Options = self.opts  # type: ignore[assignment]
        self._style = env.npc_style
        self._neutral()
        self.bridge.call("setup", timeout_s=opts.setup_timeout_s, **env.to_dict())
        self.bridge.call("target", random=True)
        self._ensure_hood_camera()
        self._npc = None
        self._ensure_npc(opts.driver == "npc")
        self._t0 = time.monotonic()
        self.pacer.reset()
        self._prev_grey = None
        return self._observe(Controls(), None, driver="reset")

    def respawn(self) -> Observation:
        """Unstuck: the mod fades out, teleports to a random road, waits for the world, fades in."""
        opts: GTA5Options = self.opts  # type: ignore[assignment]
        self._neutral()
        self.bridge.call("teleport", timeout_s=opts.teleport_timeout_s, fade=True, new_target=True)
        self.pacer.reset()
        self._prev_grey = None
        obs = self._observe(Controls(), None, driver="respawn")
        obs.info["respawned"] = True
        return obs

    def cinematic(self) -> np.ndarray:
        """hood: the latest capture at cinematic size; switch: a chase-camera grab, refreshed
        at most every `cinematic_every_s` (each switch hides the hood view for a few frames)."""
        opts: GTA5Options = self.opts  # type: ignore[assignment]
        if opts.cinematic == "hood":
            return super().cinematic()
        now = time.monotonic()
        if self._chase is None or now - self._chase_at >= opts.cinematic_every_s:
            self.bridge.call("camera", view="cinematic")
            try:
                time.sleep(opts.camera_settle_s)
                self._chase = to_rgb(self.capture.grab_raw(), self.cinematic_size)
                self._chase_at = now
            finally:
                self.bridge.call("camera", view="hood")
        return self._chase

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.bridge.close()

    # -- hooks -----------------------------------------------------------------------------

    def _drive(self, controls: Controls | None) -> tuple[Controls, Controls | None, str]:
        self._ensure_hood_camera()
        if controls is None and self.opts.driver == "npc":
            self._ensure_npc(True)
            return Controls(), None, "npc"  # the NPC's controls come with the state
        self._ensure_npc(False)
        return super()._drive(controls)

    def _observe(self, applied: Controls, translated: Controls | None, driver: str) -> Observation:
        obs = super()._observe(applied, translated, driver)
        state = self.bridge.call("state")
        self.last_state = state
        purpose = _vector(state, "purpose", 2)
        position = _vector(state, "position", 2)
        obs.speed = _number(state, "speed")
        obs.game_time = _number(state, "game_time")
        obs.heading = _number(state, "heading", 0.0)
        obs.position = None if position is None else (position[0], position[1])
        obs.purpose = np.asarray(purpose if purpose is not None else [0.0, 0.0], dtype=np.float32)
        obs.collision = bool(state.get("collision", False))
        obs.collisions = int(_number(state, "collisions", 0))
        obs.targets_reached = int(_number(state, "targets_reached", 0))
        obs.odometer = _number(state, "odometer", 0.0)
        if driver == "npc":
            npc = state.get("controls")
            if not isinstance(npc, dict):
                raise GameError(f"bridge: state.controls must be an object while the NPC drives, got {npc!r:.100}")
            obs.controls = Controls(
                max(-1.0, min(1.0, _number(npc, "acceleration_braking"))),
                max(-1.0, min(1.0, _number(npc, "steering"))),
            )
        obs.info.update(
            speed_known=True,
            purpose_known=purpose is not None,
            npc=bool(state.get("npc", False)),
            respawned=bool(state.get("respawned", False)),  # the mod moved the car by itself
            bridge_generation=self.bridge.generation,
        )
        return obs
