"""`charles sim`'s loop: the NPC, the keyboard or a model drives the simulator, shown in a
window or written to an MP4, and the docs pictures; torch-free unless a model drives."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from pipeline.games.base import Environment, Observation
from pipeline.games.sim import SimGame
from pipeline.games.sim.viewer import KeyboardDriver, composite

#: The looks of the docs pictures: name, weather, hour.
PICTURES = (("day", "clear", 12.5), ("night", "clear", 22.5), ("rain", "rain", 15.0), ("fog", "fog", 9.0))


def docs_pictures(folder: Path, env: Environment, seconds: float, size: tuple[int, int]) -> list[Path]:
    """The same drive under each look: the hood frame (4x, nearest) and the chase camera, as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    game = SimGame(cinematic_size=size)
    written = []
    try:
        for name, weather, hours in PICTURES:
            obs = game.reset(Environment(**{**env.to_dict(), "weather": weather, "time_of_day": hours}))
            while obs.game_time < seconds:
                obs = game.step()
            hood = cv2.resize(obs.frame, (obs.frame.shape[1] * 4, obs.frame.shape[0] * 4),
                              interpolation=cv2.INTER_NEAREST)
            for kind, image in (("hood", hood), ("chase", game.cinematic())):
                path = folder / f"sim_{kind}_{name}.png"
                cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                written.append(path)
    finally:
        game.close()
    return written


@dataclass
class DriveResult:
    """What one drive did, for `charles sim`'s JSON line."""

    obs: Observation
    frames: int
    forward_m: float
    max_speed: float
    respawns: int
    held: dict[str, int]
    ended: str  # "time", "quit" or "signal"

    def as_dict(self) -> dict[str, Any]:
        return {"game_s": round(self.obs.game_time, 2), "frames": self.frames,
                "distance_m": round(self.obs.odometer, 2), "forward_m": round(self.forward_m, 2),
                "max_speed": round(self.max_speed, 2), "collisions": self.obs.collisions,
                "targets": self.obs.targets_reached, "respawns": self.respawns,
                "keys_held_frames": self.held, "ended": self.ended}


def drive(game: SimGame, obs: Observation, seconds: float, window: Any = None, video: Any = None,
          model: Any = None, npc: bool = True, stop: threading.Event | None = None) -> DriveResult:
    """Step the game from `obs` for `seconds` game seconds, or until `stop` (Ctrl-C, SIGTERM:
    the video so far stays playable). The driver is `model` (a ModelDriver) when given, else
    the NPC (`npc`) or the window's keyboard; every frame goes to `video` or `window`. A
    stuck model or NPC is respawned, as a player would be."""
    if model is not None:
        model.start(obs)
    keyboard = KeyboardDriver()
    held = {"up": 0, "down": 0, "left": 0, "right": 0}
    frames, forward, top, respawns, ended = 0, 0.0, 0.0, 0, "time"
    if window is not None:
        window.show(composite(game, obs))
    while obs.game_time < seconds:
        if stop is not None and stop.is_set():
            ended = "signal"
            break
        controls = None if model is None else model.controls()
        if window is not None:
            keys = window.keys()
            if "quit" in keys:
                ended = "quit"
                break
            if "respawn" in keys:
                obs = game.respawn()
                if model is not None:
                    model.start(obs)
            for k in held.keys() & keys:
                held[k] += 1
            if not npc:
                controls = keyboard.controls(keys)
        obs = game.step(controls)
        frames += 1
        forward += obs.speed * game.dt
        top = max(top, obs.speed)
        stuck = model.observe(obs) if model is not None else npc and obs.info.get("stuck")
        if stuck:
            obs = game.respawn()
            respawns += 1
            if model is not None:
                model.start(obs)
        frame = composite(game, obs)
        if video is not None:
            video.write(frame)
        else:
            window.show(frame)
    return DriveResult(obs, frames, forward, top, respawns, held, ended)
