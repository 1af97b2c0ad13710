"""The `gymnasium` backend: any registered gymnasium env with image frames as a Charles game.

`[game] backend = "gymnasium"` with `[game.options]`:

- `env_id`: the env, as `gymnasium.make` takes it (`"module:EnvId-v0"` imports the module
  that registers it first), and `env_kwargs` for it;
- `action`: how Charles' controls become the env's action: `steer_gas_brake` ([steering,
  gas, brake], e.g. CarRacing: gas = acceleration_braking > 0, brake = its negative part),
  `accel_steer` ([acceleration_braking, steering], e.g. CharlesSim-v0) or `steer_accel`;
- `frame`: where the hood frame comes from: `observation` (the observation is the image),
  `observation.KEY` (one key of a dict observation) or `render` (`env.render()`, rgb_array);
  it is resized to the hood size. `speed` likewise (`observation.KEY` or `info.KEY`; unset: 0);
- `expert`: a `package.module:function` called as `expert(observation, env)` that returns the
  expert's [acceleration_braking, steering] for the state. It drives on `step(None)` (the
  NPC of collection episodes) and, with `expert_labels=True`, labels every tick someone else
  drives (DAgger). Without it there is no NPC and no expert labels.

The rewards are summed as the game's own score (`info["score"]`, `Capabilities.score`). An
env episode that ends (terminated or truncated) is reset, reported like a respawn.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import ConfigError, GameError
from pipeline.games.base import Capabilities, Controls, Environment, Observation
from pipeline.games.options import parse_options

Expert = Callable[[Any, Any], Any]


class GymOptions(BaseModel):
    """`[game.options]` of the gymnasium backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env_id: str = Field(..., min_length=1, description="what gymnasium.make takes, e.g. 'CarRacing-v3'")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for gymnasium.make")
    action: Literal["steer_gas_brake", "accel_steer", "steer_accel"] = "steer_gas_brake"
    frame: str = Field("observation", pattern=r"^(observation(\.\w+)?|render)$")
    speed: str | None = Field(None, pattern=r"^(observation|info)\.\w+$")
    expert: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    expert_labels: bool = Field(False, description="label ticks someone else drives with the expert (DAgger)")


def to_action(controls: Controls, mapping: str) -> np.ndarray:
    """Charles' controls as the env's action."""
    a, s = float(controls.acceleration_braking), float(controls.steering)
    if mapping == "steer_gas_brake":
        return np.array([s, max(a, 0.0), max(-a, 0.0)], np.float32)
    if mapping == "accel_steer":
        return np.array([a, s], np.float32)
    return np.array([s, a], np.float32)


def _load_expert(path: str) -> Expert:
    module_name, _, name = path.partition(":")
    try:
        expert = getattr(importlib.import_module(module_name), name, None)
    except ImportError as exc:
        raise ConfigError(f"game.options.expert: cannot import {module_name!r}: {exc}") from None
    if not callable(expert):
        raise ConfigError(f"game.options.expert: {module_name!r} has no callable {name!r}")
    return expert


class GymGame:
    """A gymnasium env behind the `Game` protocol (see the module docstring for the options)."""

    @classmethod
    def capabilities_for(cls, options: dict[str, Any]) -> Capabilities:
        """Expert labels only with an `expert`; respawn = the env's reset; the summed reward is its score."""
        return Capabilities(expert_labels=bool(options.get("expert")), respawn=True, score="return")

    capabilities = Capabilities(respawn=True, score="return")

    @classmethod
    def code_modules(cls, options: dict[str, Any]) -> list[str]:
        """Modules whose packages decide how this game plays beyond the adapter: the env's (its
        registered entry point, or the module `env_id` names) and the expert's. Their sources go
        into the evaluator's reference key, so a changed env or expert drives the NPC again."""
        import gymnasium

        modules = []
        env_id = str(options.get("env_id", ""))
        if ":" in env_id:
            modules.append(env_id.partition(":")[0])
        try:
            entry = gymnasium.spec(env_id.rpartition(":")[2]).entry_point
        except gymnasium.error.Error:
            entry = None
        if isinstance(entry, str):
            modules.append(entry.partition(":")[0])
        elif entry is not None:
            modules.append(entry.__module__)
        if options.get("expert"):
            modules.append(str(options["expert"]).partition(":")[0])
        return modules

    def __init__(self, hood_size: tuple[int, int] = (160, 120), cinematic_size: tuple[int, int] = (640, 360),
                 fps: float = 30.0, realtime: bool = False, **options: Any) -> None:
        import gymnasium

        self.opts = parse_options(GymOptions, "gymnasium", options)
        self.hood_size = (int(hood_size[0]), int(hood_size[1]))
        self.cinematic_size = (int(cinematic_size[0]), int(cinematic_size[1]))
        self.fps = float(fps)
        self.expert = _load_expert(self.opts.expert) if self.opts.expert else None
        if self.opts.expert_labels and self.expert is None:
            raise ConfigError("game.options.expert_labels needs game.options.expert (who labels?)")
        render_mode = "rgb_array" if self.opts.frame == "render" else None
        try:
            self.env = gymnasium.make(self.opts.env_id, render_mode=render_mode, **self.opts.env_kwargs)
        except (gymnasium.error.Error, ImportError, ModuleNotFoundError) as exc:
            raise ConfigError(f"game.options.env_id: gymnasium cannot make {self.opts.env_id!r}: {exc}") from None
        self.obs: Any = None
        self.info: dict[str, Any] = {}
        self.steps = 0
        self.score = 0.0
        self.odometer = 0.0
        self._seed = 0

    # -- what the env's observation says ---------------------------------------------------

    def _pick(self, where: str) -> Any:
        source, _, key = where.partition(".")
        container = self.obs if source == "observation" else self.info
        if not key:
            return container
        try:
            return container[key]
        except (KeyError, TypeError, IndexError):
            raise GameError(f"gymnasium: {where} is not in the env's {source}") from None

    def _frame(self, size: tuple[int, int]) -> np.ndarray:
        image = self.env.render() if self.opts.frame == "render" else self._pick(self.opts.frame)
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise GameError(f"gymnasium: the frame ({self.opts.frame}) is {list(image.shape)}, not an H x W x 3 image")
        if image.dtype != np.uint8:
            image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        image = np.ascontiguousarray(image[:, :, :3])
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return image

    def _observe(self, applied: Controls, extra: dict[str, Any]) -> Observation:
        speed = float(np.asarray(self._pick(self.opts.speed)).reshape(-1)[0]) if self.opts.speed else 0.0
        return Observation(frame=self._frame(self.hood_size), speed=speed, purpose=np.zeros(2, np.float32),
                           controls=applied, game_time=self.steps / self.fps, odometer=self.odometer,
                           info={"score": self.score, **extra})

    def _expert_controls(self) -> Controls:
        assert self.expert is not None
        return Controls.from_array(np.asarray(self.expert(self.obs, self.env), dtype=np.float32).reshape(-1)[:2])

    # -- the Game protocol -----------------------------------------------------------------

    def reset(self, env: Environment) -> Observation:
        """A new episode seeded by `env.episode_seed` (the env has no weather or maps to set)."""
        self._seed = int(env.episode_seed)
        self.obs, self.info = self.env.reset(seed=self._seed)
        self.steps, self.score, self.odometer = 0, 0.0, 0.0
        return self._observe(Controls(), {})

    def step(self, controls: Controls | None = None) -> Observation:
        """One env step; None lets the expert drive; with `expert_labels` the expert's command for
        this state is `info["expert"]` whoever drives."""
        extra: dict[str, Any] = {}
        if controls is None:
            if self.expert is None:
                raise GameError("gymnasium: step(None) needs game.options.expert, the env has no NPC")
            controls = self._expert_controls()
        elif self.opts.expert_labels:
            extra["expert"] = self._expert_controls().as_array().tolist()
        self.obs, reward, terminated, truncated, self.info = self.env.step(to_action(controls, self.opts.action))
        self.steps += 1
        self.score += float(reward)
        if self.opts.speed:
            self.odometer += abs(float(np.asarray(self._pick(self.opts.speed)).reshape(-1)[0])) / self.fps
        if terminated or truncated:  # the env's episode ended: a new one goes on, like a respawn
            self._seed += 1
            self.obs, self.info = self.env.reset(seed=self._seed)
            extra["respawned"] = True
        return self._observe(controls, extra)

    def respawn(self) -> Observation:
        """Unstuck: the env's reset, with the next seed; the score goes on."""
        self._seed += 1
        self.obs, self.info = self.env.reset(seed=self._seed)
        return self._observe(Controls(), {"respawned": True})

    def cinematic(self) -> np.ndarray:
        return self._frame(self.cinematic_size)

    def close(self) -> None:
        self.env.close()
