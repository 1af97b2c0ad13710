"""Closed-loop scoring: drive a policy on the held-out seeds and turn what happened into scores.

Three policies are driven the same way, by the player's own loop (`Player`, no weights
watcher) in fast mode, with the same Stuck detection and Unstuck respawn: the model, the
NPC expert (`step(None)`), and a trivial baseline (straight ahead at constant throttle).
Every episode is reproducible: its environment, map seed, spawn and traffic come from the
plan, which only ever uses `collection.held_out_seeds`, the seeds no collector drives.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from pipeline.collect.context import ContextBuilder
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.evaluate.confidence import score_intervals
from pipeline.evaluate.metrics import (
    Trace,
    by_environment,
    episode_counts,
    pooled_metrics,
    ratio_to_npc,
)
from pipeline.games.base import (
    Capabilities,
    Controls,
    Environment,
    Game,
    Observation,
    capabilities_of,
)
from pipeline.play.player import Player
from pipeline.play.unstuck import StuckDetector
from pipeline.wire.schema import ContextSpec

log = structlog.get_logger(__name__)

#: Bump when the way episodes are driven or scored changes: cached NPC/baseline scores expire.
#: 2: references keep their per-episode counts (the confidence intervals resample them).
#: 3: progress_m along the route to the target, not in a straight line (issue 18 #7).
#: (Issue 16's game_score needs no bump: the simulator has none, and a plug-in's key changes
#: with its package's hash and its plan.)
PROTOCOL = 3
#: The trivial baseline's throttle: enough to reach town speed on a straight, never steering.
BASELINE_THROTTLE = 0.5

#: Evaluation environment names (config `evaluator.environments`) -> what differs from clear noon.
ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "day": {"weather": "clear", "time_of_day": 12.0, "traffic_density": 0.3},
    "night": {"weather": "clear", "time_of_day": 23.0, "traffic_density": 0.3},
    "rain": {"weather": "rain", "time_of_day": 15.0, "traffic_density": 0.3},
    "traffic": {"weather": "clear", "time_of_day": 17.5, "traffic_density": 1.0},
    "fog": {"weather": "fog", "time_of_day": 9.0, "traffic_density": 0.3},
    "overcast": {"weather": "overcast", "time_of_day": 14.0, "traffic_density": 0.3},
    "dusk": {"weather": "clear", "time_of_day": 20.5, "traffic_density": 0.3},
    "empty": {"weather": "clear", "time_of_day": 12.0, "traffic_density": 0.0},
}


def environment(name: str, map_seed: int, episode_seed: int, capabilities: Capabilities | None = None) -> Environment:
    """The Environment an evaluation environment name stands for, on one map: the backend's own
    scenario of that name where it declares scenarios, else the built-in one, keeping only the
    fields the backend varies (its first car, where it has cars). Without `capabilities`, the
    built-in one whole (the simulator's scenes)."""
    if capabilities is not None and capabilities.scenarios:
        if name not in capabilities.scenarios:
            raise ConfigError(f"evaluator.environments: {name!r} is not one of the backend's scenarios "
                              f"{sorted(capabilities.scenarios)}")
        return Environment(map_seed=map_seed, episode_seed=episode_seed, **capabilities.scenarios[name])
    if name not in ENVIRONMENTS:
        raise ConfigError(f"evaluator.environments: {name!r} is not one of {sorted(ENVIRONMENTS)}")
    fields: dict[str, Any] = {"car": "sedan", "npc_style": "normal", **ENVIRONMENTS[name]}
    if capabilities is not None:
        cars = capabilities.environment.get("car")
        fields = {k: v for k, v in {**fields, "car": cars[0] if cars else "sedan"}.items() if capabilities.varies(k)}
    return Environment(map_seed=map_seed, spawn=None, episode_seed=episode_seed, **fields)


@dataclass(frozen=True)
class EpisodePlan:
    name: str  # the evaluation environment's name
    env: Environment


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides what the evaluator drives; unpacked from the config once."""

    episode_s: float
    environments: tuple[str, ...]
    episodes_per_environment: int
    held_out_seeds: tuple[int, ...]
    fps: float
    context: ContextSpec
    min_displacement_m: float
    window_s: float
    grace_s: float
    confidence: float = 0.9
    bootstrap_resamples: int = 2000
    processes: int = 1
    rank_by: str = "ratio_to_npc"
    #: what the backend declares (its scenarios, the fields it varies); None: the sim's scenes whole
    capabilities: Capabilities | None = None

    @classmethod
    def from_config(cls, cfg: Config, episodes: int | None = None, seconds: float | None = None) -> EvalSettings:
        e = cfg.evaluator
        if not cfg.collection.held_out_seeds:
            raise ConfigError("collection.held_out_seeds: the evaluator needs at least one held-out seed")
        caps = capabilities_of(cfg.game.backend, cfg.game.options)
        for name in e.environments:
            environment(name, 0, 0, caps)  # names are checked here, before anything is driven
        if e.rank_by == "game_score":
            if not caps.score:
                raise ConfigError(f"evaluator.rank_by = 'game_score' needs a backend with its own score, and "
                                  f"{cfg.game.backend!r} declares none (Capabilities.score); use 'ratio_to_npc'")
        return cls(
            episode_s=float(seconds if seconds is not None else e.episode_s),
            environments=tuple(e.environments),
            episodes_per_environment=int(episodes if episodes is not None else e.episodes_per_environment),
            held_out_seeds=tuple(cfg.collection.held_out_seeds),
            fps=cfg.game.fps,
            context=ContextSpec.from_inputs(cfg.inputs, cfg.game.fps),
            min_displacement_m=cfg.unstuck.min_displacement_m,
            window_s=cfg.unstuck.window_s,
            grace_s=cfg.unstuck.grace_s,
            confidence=e.confidence,
            bootstrap_resamples=e.bootstrap_resamples,
            processes=e.processes,
            rank_by=e.rank_by,
            capabilities=caps,
        )

    def plan(self) -> list[EpisodePlan]:
        """Episodes, environment by environment; held-out seeds are dealt round-robin."""
        out = []
        for i, name in enumerate(self.environments):
            for j in range(self.episodes_per_environment):
                k = i * self.episodes_per_environment + j
                seed = self.held_out_seeds[k % len(self.held_out_seeds)]
                out.append(EpisodePlan(name, environment(name, seed, 1000 * seed + k, self.capabilities)))
        return out

    @property
    def steps(self) -> int:
        return int(round(self.episode_s * self.fps))

    def reference_key(self, cfg: Config) -> str:
        """Identifies the NPC/baseline scores: same game (code too), plan, durations and Unstuck rules."""
        ident = {
            "protocol": PROTOCOL,
            "backend_code": backend_fingerprint(cfg.game.backend, cfg.game.options),
            "baseline_throttle": BASELINE_THROTTLE,
            "game": cfg.game.model_dump(mode="json"),
            "plan": [(p.name, p.env.to_dict()) for p in self.plan()],
            "steps": self.steps,
            "unstuck": [self.min_displacement_m, self.window_s, self.grace_s],
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def backend_fingerprint(backend: str, options: dict[str, Any] | None = None) -> str:
    """A hash of the game backend's source files: a changed game must not reuse old NPC scores.

    A built-in backend is its own folder (`pipeline/games/sim/`); a plug-in is its whole
    top-level package, every `.py` file in it and its sub-packages (`mygame.world:Game` ->
    all of `mygame`), so a change anywhere in the plug-in expires its cached scores. A
    backend that plays code from elsewhere names it in `code_modules(options)` (the gymnasium
    adapter: the env's and the expert's modules); their whole top-level packages count too."""
    from pipeline.games.base import BUILTIN_BACKENDS, backend_class, resolve_backend

    try:
        module_name = resolve_backend(backend).partition(":")[0]
    except ConfigError:
        return "unknown"
    plugin = backend not in BUILTIN_BACKENDS and module_name.partition(".")[0] != "pipeline"
    files = _source_files(module_name, whole_package=plugin)
    if files is None:
        return "unknown"
    try:
        code_modules = getattr(backend_class(backend), "code_modules", None)
    except ConfigError:
        return "unknown"
    for extra in code_modules(dict(options or {})) if code_modules else []:
        files += _source_files(extra, whole_package=True) or [(f"unimportable:{extra}", None)]
    digest = hashlib.sha256()
    for name, f in files:
        digest.update(name.encode() + (f.read_bytes() if f is not None else b""))
    return digest.hexdigest()[:16]


def _source_files(module_name: str, whole_package: bool) -> list[tuple[str, Path | None]] | None:
    """(name, path) of a module's sources: its whole top-level package when `whole_package`
    (perhaps a namespace package over several folders), else its own file or folder; None when
    it does not import."""
    import importlib

    top = module_name.partition(".")[0]
    try:
        module = importlib.import_module(top if whole_package else module_name)
    except ImportError:
        return None
    if whole_package and hasattr(module, "__path__"):
        roots = [Path(p) for p in module.__path__]
        return sorted((f"{top}/{f.relative_to(root).as_posix()}", f) for root in roots for f in root.rglob("*.py"))
    path = Path(module.__file__ or "")
    chosen = sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]
    return [(f.name, f) for f in chosen]


Predict = Callable[[Any, dict[str, np.ndarray]], tuple[dict[str, list[float]], Controls]]


@dataclass(frozen=True)
class Policy:
    """Who drives: a model through `predict`, or the NPC (`npc=True`: the game's autopilot)."""

    name: str
    model: Any = None
    predict: Predict | None = None
    npc: bool = False
    weights: bytes | None = None  # the model's safetensors blob, for episodes driven in other processes


def _constant(controls: Controls) -> Predict:
    def predict(_model: Any, _context: dict[str, np.ndarray]) -> tuple[dict[str, list[float]], Controls]:
        return {}, controls

    return predict


NPC = Policy("npc", npc=True)
BASELINE = Policy("baseline", predict=_constant(Controls(BASELINE_THROTTLE, 0.0)))


def model_policy(model: Any, weights: bytes | None = None) -> Policy:
    """The model as a driver; `weights` (its safetensors blob) lets an EpisodePool drive it too."""
    from pipeline.models import predict

    return Policy("model", model=model, predict=predict, weights=weights)


class TraceRecorder:
    """A Game in front of the real one: records every observation; for the NPC ignores controls."""

    def __init__(self, game: Game, trace: Trace, npc: bool = False) -> None:
        self.game = game
        self.trace = trace
        self.npc = npc
        self.fps = game.fps

    def reset(self, env: Environment) -> Observation:
        obs = self.game.reset(env)
        self.trace.add(obs, "reset")
        return obs

    def step(self, controls: Controls | None = None) -> Observation:
        obs = self.game.step(None if self.npc else controls)
        self.trace.add(obs, "step")
        return obs

    def respawn(self) -> Observation:
        obs = self.game.respawn()
        self.trace.add(obs, "respawn")
        return obs

    def cinematic(self) -> np.ndarray:
        return self.game.cinematic()

    def close(self) -> None:
        self.game.close()


class Evaluator:
    """Drives policies through the plan; `run` returns one Trace per episode, in plan order.

    Episodes run one after another on `game`, or, given a `pool` (`EpisodePool`, one game per
    child process), several at once; every episode is reproducible, so both give the same traces.
    """

    def __init__(self, game: Game | None, settings: EvalSettings, pool: Any = None,
                 on_episode: Callable[[str, Trace], None] | None = None) -> None:
        if game is None and pool is None:
            raise ValueError("an Evaluator needs a game or an episode pool")
        self.game = game
        self.settings = settings
        self.pool = pool
        #: called with (policy name, trace) as each episode ends: a progress bar's hook
        self.on_episode = on_episode

    def drive(self, policy: Policy, plan: EpisodePlan, stop: threading.Event | None = None) -> Trace:
        s = self.settings
        if self.game is None:
            raise ValueError("this Evaluator drives through its pool only")
        trace = Trace(plan.name, plan.env.map_seed, self.game.fps)
        recorder = TraceRecorder(self.game, trace, npc=policy.npc)
        predict = policy.predict or _constant(Controls())
        player = Player(recorder, policy.model, ContextBuilder(s.context),
                        StuckDetector(s.min_displacement_m, s.window_s, s.grace_s), predict, None,
                        realtime=False, max_drive_s=float("inf"))
        player.run(plan.env, stop or threading.Event(), max_steps=s.steps)
        return trace

    def run(self, policy: Policy, stop: threading.Event | None = None) -> list[Trace]:
        if self.pool is not None:
            return self.pool.run(policy, self.settings.plan(), stop, on_episode=self.on_episode)
        traces = []
        for plan in self.settings.plan():
            start = time.monotonic()
            trace = self.drive(policy, plan, stop)
            traces.append(trace)
            log_episode(policy.name, trace, time.monotonic() - start)
            if self.on_episode is not None:
                self.on_episode(policy.name, trace)
            if stop is not None and stop.is_set():
                break
        return traces


def log_episode(policy: str, trace: Trace, wall_s: float) -> None:
    m = pooled_metrics([trace])
    log.info("evaluation_episode", policy=policy, environment=trace.environment, map_seed=trace.map_seed,
             km=round(m.distance_m / 1000, 3), incidents=m.incidents, wall_s=round(wall_s, 1))


def summarize(traces: Sequence[Trace]) -> dict[str, Any]:
    """Pooled metrics, the same per environment, and each episode's counts, as plain JSON."""
    return {
        "metrics": pooled_metrics(traces).as_dict(),
        "environments": {name: m.as_dict() for name, m in by_environment(traces).items()},
        "episodes": [episode_counts(t) for t in traces],
    }


def compare(summary: dict[str, Any], npc: dict[str, Any], confidence: float = 0.9,
            resamples: int = 2000) -> dict[str, Any]:
    """Add ratio_to_npc overall and per environment (the NPC summary is from the same plan), the
    game's own score beside it (None for a game without one), and the bootstrap intervals of
    the headline scores (`pipeline.evaluate.confidence`; None below 2 episodes)."""
    out = {**summary, "ratio_to_npc": ratio_to_npc(summary["metrics"], npc["metrics"]),
           "game_score": summary["metrics"].get("game_score")}
    envs = {}
    for name, m in summary["environments"].items():
        ref = npc["environments"].get(name)
        envs[name] = {**m, "ratio_to_npc": ratio_to_npc(m, ref) if ref else None}
    out["environments"] = envs
    out["intervals"] = score_intervals(summary.get("episodes") or [], npc.get("episodes"), confidence, resamples)
    return out


def reference_scores(evaluator: Evaluator, stop: threading.Event | None = None) -> dict[str, Any]:
    """The NPC's and the baseline's summaries on the evaluator's plan (the same for every version)."""
    s = evaluator.settings
    npc = summarize(evaluator.run(NPC, stop))
    baseline = compare(summarize(evaluator.run(BASELINE, stop)), npc, s.confidence, s.bootstrap_resamples)
    return {"npc": npc, "baseline": baseline}


def score_policy(evaluator: Evaluator, policy: Policy, references: dict[str, Any],
                 stop: threading.Event | None = None) -> dict[str, Any]:
    """One policy's scores against the references: metrics, per environment, ratio_to_npc, intervals."""
    s = evaluator.settings
    start = time.monotonic()
    scores = compare(summarize(evaluator.run(policy, stop)), references["npc"], s.confidence, s.bootstrap_resamples)
    scores["npc"] = references["npc"]["metrics"]
    base = references["baseline"]
    scores["baseline"] = {"metrics": base["metrics"], "ratio_to_npc": base["ratio_to_npc"],
                          "intervals": score_intervals(base.get("episodes") or [], references["npc"].get("episodes"),
                                                       s.confidence, s.bootstrap_resamples)}
    scores["wall_s"] = round(time.monotonic() - start, 2)
    return scores


#: Where references driven on this machine are kept between runs (`charles evaluate` and the
#: evaluator): the NPC and the baseline drive the same plan every time, so a fresh `make run`
#: need not spend its first minutes of the evaluator's core re-driving them.
REFERENCE_CACHE = Path("var") / "evaluation"


def reference_cache_file(settings: EvalSettings, cfg: Config, folder: Path | None) -> Path | None:
    """Where `file_cached_references` keeps the references of this plan and config (None: no cache)."""
    return None if folder is None else folder / f"reference-{settings.reference_key(cfg)}.json"


def read_reference_file(path: Path | None, key: str) -> dict[str, Any] | None:
    """Cached references of this plan (`key`), or None when absent, unreadable or another plan's."""
    if path is None or not path.is_file():
        return None
    try:
        refs = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("reference_cache_unreadable", path=str(path))
        return None
    return refs if isinstance(refs, dict) and refs.get("key") == key else None


def write_reference_file(path: Path | None, refs: dict[str, Any]) -> None:
    """Keep references for the next run on this machine (written whole, or not at all)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(refs))
        tmp.replace(path)
    except OSError as exc:  # a full disk costs the next run its references, nothing more
        log.warning("reference_cache_unwritable", path=str(path), error=str(exc))


def file_cached_references(evaluator: Evaluator, cfg: Config, folder: Path | None) -> dict[str, Any]:
    """References for one-off scoring, cached as JSON in `folder` (None = always drive them)."""
    key = evaluator.settings.reference_key(cfg)
    path = reference_cache_file(evaluator.settings, cfg, folder)
    refs = read_reference_file(path, key)
    if refs is None:
        refs = {**reference_scores(evaluator), "key": key}
        write_reference_file(path, refs)
    return refs


#: The policies of a one-off report, in the order they are shown.
POLICIES = ("model", "npc", "baseline")


def policy_report(scores: dict[str, Any], references: dict[str, Any], confidence: float = 0.9,
                  resamples: int = 2000) -> dict[str, dict[str, Any]]:
    """The model's, the NPC's and the baseline's scores in one shape each: `metrics`,
    `environments` (each with its ratio_to_npc), `ratio_to_npc`, `intervals`, `episodes`.
    `scores` is `score_policy`'s record, `references` what `reference_scores` returned."""
    npc = references["npc"]
    npc_entry = compare(npc, npc, confidence, resamples)
    npc_entry["intervals"] = score_intervals(npc.get("episodes") or [], None, confidence, resamples)
    base = references["baseline"]
    out = {"model": scores, "npc": npc_entry, "baseline": base}
    keys = ("metrics", "environments", "ratio_to_npc", "game_score", "intervals", "episodes")
    return {name: {k: out[name].get(k) for k in keys} for name in POLICIES}


def report_warnings(policies: dict[str, dict[str, Any]], episode_s: float) -> list[str]:
    """What makes a report mislead, one sentence each: censored distances, a baseline that
    scores as well as the model, a ratio that cannot be computed."""
    warnings = []
    censored = [name for name in POLICIES if policies[name]["metrics"]["censored"]]
    if censored:
        warnings.append(
            f"no incident at all for {', '.join(censored)}: the mean distance between incidents is then the "
            f"distance per episode, a lower bound (censored), and ratios to it compare how far each drove in "
            f"{episode_s:g} s, not how safely; use longer episodes (--seconds) or more (--episodes)")
    model, baseline = policies["model"]["ratio_to_npc"], policies["baseline"]["ratio_to_npc"]
    if model is None:
        warnings.append("the NPC drove nowhere on this plan, so no policy has a ratio_to_npc")
    elif baseline is not None and baseline >= model:
        warnings.append(
            f"the straight-ahead baseline ({baseline:.2f}) scores at least as well as the model ({model:.2f}): "
            "the model does no better than holding the throttle and never steering")
    return warnings
