"""The options of the real backends (`[game.options]`), checked like the rest of the config.

Unknown or misspelt options stop the process at start with every problem listed, the
same way `pipeline.config` treats the TOML file.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import Config, ControlConfig
from pipeline.errors import ConfigError
from pipeline.games.base import Game, load_game
from pipeline.games.io.control import KeyMap

#: The port the GTA5 mod listens on unless its ini file says otherwise.
DEFAULT_BRIDGE_PORT = 27315
M = TypeVar("M", bound=BaseModel)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeysOptions(_Options):
    """Drive keys (keyboard output and keyboard human driver)."""

    forward: str = "w"
    back: str = "s"
    left: str = "a"
    right: str = "d"

    def keymap(self) -> KeyMap:
        return KeyMap(self.forward, self.back, self.left, self.right)


class ScreenOptions(_Options):
    """Any window, captured with mss, driven by a virtual gamepad or keys; no mod."""

    window: str | None = Field(None, description="capture the window whose title contains this")
    region: tuple[int, int, int, int] | None = Field(None, description="[left, top, width, height]")
    monitor: int = Field(1, ge=0, description="without window/region: this monitor (mss numbering)")
    relocate_s: float = Field(2.0, gt=0, description="look the window up again this often")
    pace: bool = Field(
        True, description="hold each step to 1/fps: a real game runs in real time whatever `realtime` says; "
        "false only to measure how fast the loop could go"
    )
    control: ControlConfig = Field(default_factory=ControlConfig, description="the [control] section")
    gamepad: str = Field("vgamepad", description="vgamepad | 'package.module:Class'")
    key_sender: str = Field("auto", description="auto | xtest | xdotool | sendinput | 'package.module:Class'")
    keys: KeysOptions = Field(default_factory=KeysOptions)
    driver: Literal["npc", "human"] = Field("human", description="who drives on step(None)")
    human_input: str = Field("auto", description="auto | xinput | keyboard | 'package.module:Class'")
    pad_index: int = Field(0, ge=0, le=3, description="XInput user index of the human's pad")
    unstuck_reverse_s: float = Field(1.5, ge=0, description="Unstuck: reverse (and turn) this long")
    unstuck_forward_s: float = Field(1.0, ge=0, description="Unstuck: then forward, turning back")


class GTA5Options(ScreenOptions):
    """GTA5: screen capture + virtual gamepad + the TCP bridge to the Charles mod."""

    window: str | None = "Grand Theft Auto V"
    driver: Literal["npc", "human"] = "npc"
    host: str = Field("127.0.0.1", description="where the mod's bridge listens")
    port: int = Field(DEFAULT_BRIDGE_PORT, gt=0, lt=65536)
    connect_timeout_s: float = Field(3.0, gt=0)
    reply_timeout_s: float = Field(1.0, gt=0, description="state, ping, npc, camera, target")
    setup_timeout_s: float = Field(20.0, gt=0, description="setup: spawning the car and world")
    teleport_timeout_s: float = Field(30.0, gt=0, description="teleport: fade, move, load, fade in")
    heartbeat_s: float = Field(1.0, gt=0, description="ping the mod when idle this long")
    cinematic: Literal["hood", "switch"] = Field(
        "hood", description="hood: the hood capture at cinematic size; switch: camera switch per call"
    )
    camera_settle_s: float = Field(0.1, ge=0, description="switch: wait for the camera to move")
    cinematic_every_s: float = Field(
        5.0, ge=0, description="switch: refresh the chase view at most this often (a switch costs frames)"
    )


def parse_options(model: type[M], backend: str, options: dict[str, Any]) -> M:
    """Validate a backend's options; the ConfigError lists every problem and what is allowed."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        allowed = ", ".join(sorted(model.model_fields))
        lines = [f"game.options for backend {backend!r}: {exc.error_count()} invalid option(s):"]
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<options>"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown option (allowed: {allowed})"
            lines.append(f"  - game.options.{key}: {msg} (got {err.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def game_options(cfg: Config, realtime: bool) -> dict[str, Any]:
    """Keyword arguments for the configured backend.

    `[game.options]` comes from the shared config; CHARLES_GAME_OPTIONS (JSON) on this
    machine is merged on top, for per-machine settings such as a window title or a port.
    Real backends also get the `[control]` section (dead zones, keyboard or gamepad).
    """
    g = cfg.game
    local = os.environ.get("CHARLES_GAME_OPTIONS", "")
    try:
        overrides = json.loads(local) if local else {}
    except ValueError:
        raise ConfigError(f"CHARLES_GAME_OPTIONS is not valid JSON: {local[:200]!r}") from None
    if not isinstance(overrides, dict):
        raise ConfigError("CHARLES_GAME_OPTIONS must be a JSON object of game options")
    options: dict[str, Any] = {
        "hood_size": (g.hood_width, g.hood_height),
        "cinematic_size": (g.cinematic_width, g.cinematic_height),
        "fps": g.fps,
        "realtime": realtime,
        **g.options,
        **overrides,
    }
    if g.backend in ("gta5", "screen"):
        options.setdefault("control", cfg.control.model_dump())
    return options


class GameCache:
    """One game kept between jobs and rebuilt only when the config's game section or the
    extra options change: a collector's or an evaluator's episodes reuse its world."""

    def __init__(self) -> None:
        self.game: Game | None = None
        self._key = ""

    def get(self, cfg: Config, **extra: Any) -> Game:
        key = cfg.game.model_dump_json() + json.dumps(extra, sort_keys=True)
        if self.game is None or self._key != key:
            self.close()
            self.game = load_game(cfg.game.backend, **{**game_options(cfg, realtime=False), **extra})
            self._key = key
        return self.game

    def close(self) -> None:
        if self.game is not None:
            self.game.close()
            self.game = None
