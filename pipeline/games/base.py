"""The game protocol every backend implements: the built-in simulator, GTA5, any screen.

Collectors, players and the evaluator only talk to a `Game`. The clock is the game's:
one `step` advances it by exactly 1/fps seconds (the simulator in `fast` mode does
that as fast as the CPU allows; a real game is paced by its own frame rate).

What a backend can do beyond the protocol it declares on its class (`capabilities`, a
`Capabilities`): the server, the collector and the config check read that, never the
backend's name, so a plug-in gets what the simulator gets when it declares the same.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.errors import ConfigError

#: The weathers every backend knows (the config's `server.weathers` lists a subset).
WEATHERS: tuple[str, ...] = ("clear", "overcast", "rain", "fog")

#: Short names for the backends that ship with Charles.
BUILTIN_BACKENDS: dict[str, str] = {
    "sim": "pipeline.games.sim:SimGame",
    "gta5": "pipeline.games.gta5:GTA5Game",
    "screen": "pipeline.games.screen:ScreenGame",
    "gymnasium": "pipeline.games.gym_adapter:GymGame",
}
#: The entry-point group a game package registers its backend in (`pip install mygame` is then
#: all a machine needs: `[game] backend = "mygame"`).
ENTRY_POINT_GROUP = "charles.games"


def installed_backends() -> dict[str, str]:
    """Backends registered by installed packages: name -> 'package.module:Class'."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_backend(backend: str) -> str:
    """A backend's 'package.module:Class': a built-in's, an installed plug-in's (entry point
    group `charles.games`), or the dotted path given; a ConfigError of one line otherwise."""
    if backend in BUILTIN_BACKENDS:
        return BUILTIN_BACKENDS[backend]
    if ":" in backend:
        return backend
    installed = installed_backends()
    if backend in installed:
        return installed[backend]
    raise ConfigError(
        f"game.backend: {backend!r} is neither a built-in ({sorted(BUILTIN_BACKENDS)}), an installed plug-in "
        f"(entry points {ENTRY_POINT_GROUP!r}: {sorted(installed) or 'none'}) nor a 'package.module:Class' path"
    )


@dataclass(frozen=True)
class Controls:
    """What drives the car: combined acceleration/braking and steering, both in [-1, 1].

    acceleration_braking > 0 accelerates, < 0 brakes (and reverses once stopped).
    steering > 0 turns right, < 0 turns left.
    """

    acceleration_braking: float = 0.0
    steering: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.array([self.acceleration_braking, self.steering], dtype=np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray | list[float]) -> Controls:
        return cls(float(np.clip(values[0], -1, 1)), float(np.clip(values[1], -1, 1)))


@dataclass(frozen=True)
class Environment:
    """One episode's world, chosen by the server for a collection job (or by the evaluator)."""

    map_seed: int = 1
    weather: str = "clear"  # clear | overcast | rain | fog
    time_of_day: float = 12.0  # hours, 0..24
    car: str = "sedan"
    traffic_density: float = 0.5  # 0..1
    spawn: int | None = None  # spawn point index; None = random from the episode seed
    episode_seed: int = 0  # randomness of traffic, perturbations, spawn
    npc_style: str = "normal"  # NPC driving style: calm | normal | aggressive

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown environment keys {sorted(unknown)}")
        return cls(**data)


#: The Environment fields a backend may declare it varies (every backend gets an `episode_seed`).
ENVIRONMENT_FIELDS: tuple[str, ...] = ("map_seed", "weather", "time_of_day", "car", "traffic_density", "spawn",
                                       "npc_style")
#: Fields whose declared values are names; the others declare (low, high), or () for any value.
NAMED_FIELDS: tuple[str, ...] = ("weather", "car", "npc_style")
#: The incidents a backend may report: `Observation.collision`, and a car stuck until Unstuck.
INCIDENTS: tuple[str, ...] = ("collision", "stuck")


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares it can do (a class attribute `capabilities`; none declared = none).

    - `expert_labels`: built with the option `expert_labels=True`, `step(controls)` drives
      with the given controls and puts its expert's command for that state in
      `info["expert"]` (DAgger: `collection.model_drives` > 0 needs it).
    - `environment`: the Environment fields `reset` honours, each with its values: names for
      weather, car and npc_style, (low, high) for numbers, () for any value. The server
      samples only these; the rest keep Environment's defaults.
    - `purpose`: observations carry a Purpose target (`purpose`, `targets_reached`).
    - `respawn`: `respawn()` moves the car to another spot (a teleport), not a manoeuvre in place.
    - `incidents`: which of `INCIDENTS` it reports.
    - `scenarios`: the backend's own evaluation environments (`[evaluator] environments`
      names them), each the Environment fields it sets; without any, the evaluator's
      built-in ones (day, night, rain, traffic, ...) keep only the fields the backend varies.
    - `score`: the name of the game's own per-episode score (an episode return, lap progress),
      higher is better; observations report the episode's score so far as `info["score"]`.
      The evaluator reports it beside ratio_to_npc; `[evaluator] rank_by = "game_score"` ranks
      versions by it. Empty: the game has none.
    """

    expert_labels: bool = False
    environment: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    purpose: bool = False
    respawn: bool = False
    incidents: tuple[str, ...] = ()
    scenarios: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    score: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.environment) - set(ENVIRONMENT_FIELDS))
        if unknown:
            raise ValueError(f"Capabilities.environment: unknown field(s) {unknown}; allowed: {list(ENVIRONMENT_FIELDS)}")
        for name, values in self.environment.items():
            if name not in NAMED_FIELDS and len(values) not in (0, 2):
                raise ValueError(f"Capabilities.environment[{name!r}]: give (low, high) or (), got {values!r}")
            if name in NAMED_FIELDS and not values:
                raise ValueError(f"Capabilities.environment[{name!r}]: name the values it takes")
        for name, fields in self.scenarios.items():
            extra = sorted(set(fields) - set(ENVIRONMENT_FIELDS))
            if extra:
                raise ValueError(f"Capabilities.scenarios[{name!r}]: unknown field(s) {extra}")
        bad = sorted(set(self.incidents) - set(INCIDENTS))
        if bad:
            raise ValueError(f"Capabilities.incidents: unknown {bad}; allowed: {list(INCIDENTS)}")

    def varies(self, name: str) -> bool:
        return name in self.environment


@dataclass
class Observation:
    """What the game reports after a step; `frame` is the hood camera, the model's input."""

    frame: np.ndarray  # uint8 H x W x 3, RGB
    speed: float  # m/s along the heading (negative in reverse); 0.0 where unknown
    purpose: np.ndarray  # float32 [distance m, direction rad (+ = target to the left)]
    controls: Controls  # the controls applied during this step (the NPC's when it drives)
    game_time: float  # seconds on the game clock
    position: tuple[float, float] | None = None  # world metres; None where the game can't tell
    heading: float = 0.0  # radians
    odometer: float = 0.0  # metres driven this episode
    collision: bool = False  # a collision happened during this step
    collisions: int = 0  # collisions this episode
    lane_offset: float | None = None  # metres from the lane centre, where known
    targets_reached: int = 0  # Purpose targets reached this episode
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Game(Protocol):
    """A driving game as Charles sees it."""

    fps: float

    def reset(self, env: Environment) -> Observation:
        """Set up an episode with this environment (map, weather, time, car, traffic, spawn)."""
        ...

    def step(self, controls: Controls | None = None) -> Observation:
        """Advance one tick; `None` lets the NPC autopilot drive (collectors)."""
        ...

    def respawn(self) -> Observation:
        """The Unstuck teleport: fade out, move to a random road spot, fade in."""
        ...

    def cinematic(self) -> np.ndarray:
        """The 3rd-person chase camera for viewers (uint8 H x W x 3, RGB)."""
        ...

    def close(self) -> None:
        """Release windows, sockets and gamepads."""
        ...


def backend_class(backend: str) -> Any:
    """The class behind a short name (`sim`, `gta5`, `screen`, an installed plug-in's) or a
    `package.module:Class` path, imported; a ConfigError of one line when it cannot be."""
    module_name, _, class_name = resolve_backend(backend).partition(":")
    return import_named(module_name, class_name, "game.backend")


def import_named(module_name: str, name: str, key: str) -> Any:
    """`name` from `module_name`, imported for the config key `key` (a backend, a plug-in
    device); a ConfigError of one line that names the key when it cannot be."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import {module_name!r}: {exc}") from None
    found = getattr(module, name, None)
    if found is None:
        raise ConfigError(f"{key}: {module_name!r} has no {name!r}")
    return found


def capabilities_of(backend: str, options: dict[str, Any] | None = None) -> Capabilities:
    """What a backend declares (`Capabilities()`, nothing, when its class declares nothing); a
    class whose capabilities depend on its `[game.options]` (the gymnasium adapter: expert
    labels only with an expert) answers through `capabilities_for(options)`."""
    cls = backend_class(backend)
    if hasattr(cls, "capabilities_for"):
        caps = cls.capabilities_for(dict(options or {}))
    else:
        caps = getattr(cls, "capabilities", Capabilities())
    if not isinstance(caps, Capabilities):
        raise ConfigError(f"game.backend: {backend}.capabilities must be a pipeline.games.base.Capabilities")
    return caps


def load_game(backend: str, *, own_process: bool = False, **options: Any) -> Game:
    """Build a backend from a short name (`sim`, `gta5`, `screen`, an installed plug-in's) or
    `package.module:Class`; with `own_process` it runs in a child process (`pipeline.games.process`)."""
    if own_process:
        from pipeline.games.process import ProcessGame

        return ProcessGame(backend, **options)
    game = backend_class(backend)(**options)
    if not isinstance(game, Game):
        raise ConfigError(f"game.backend: {resolve_backend(backend)} does not implement the Game protocol")
    return game
