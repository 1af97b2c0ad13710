"""Driving scores from recorded trajectories: pure functions, so every figure is exact and testable.

Loss is not driving, so Charles is judged on what the car did. A `Trace` is one episode as
the evaluator saw it: the observation after `reset`, one `Tick` per game step, and one per
Unstuck respawn. `episode_metrics`/`pooled_metrics` turn traces into numbers; nothing here
touches a game, a model or Redis.

Definitions (pooled over every episode of a policy; the same for the model, the NPC expert
and the trivial baseline):

- distance_m: metres on the odometer (reversing counts; a respawn teleport does not).
- duration_s: game seconds driven = steps / fps (the Unstuck fade is not driving).
- collisions: steps that report a new collision (the game counts one per contact).
- unstucks: Unstuck respawns (the car moved less than the detector's minimum for its window).
- incidents: collisions + unstucks, except that an Unstuck within INCIDENT_MERGE_M metres
  of driving after a collision belongs to that collision (a crash that pins the car is one
  incident, not two).
- incidents_per_km: incidents / km; below MIN_DISTANCE_M of driving the distance counts as
  MIN_DISTANCE_M, so a car that never moves scores a large finite number, not infinity.
- mean_distance_between_incidents_m (MDBI): the mean length of the incident-free stretches.
  An episode with n incidents is cut into n + 1 stretches (its start and end bound the first
  and last), so MDBI = distance / (incidents + episodes). With no incident at all it is the
  mean distance per episode, a lower bound of the true figure; `censored` says so.
- mean_abs_lane_offset_m: mean |lane offset| over the steps where the game reports one.
- targets_reached: Purpose targets reached; progress_m: how far the car advanced along its
  route to the current target, summed over the steps that kept the same route (a step that
  reaches or changes its target, or is rerouted, counts 0; a respawn is not a step). Games that
  report no route (`info["route"]`) count how much closer the car got in a straight line
  (the Purpose distance), which goes negative while a road leads round a bend away from the
  target; progress_per_km = progress_m / km.
- mean_speed_mps: distance_m / duration_s.
- game_score: the game's own score (a backend that declares `Capabilities.score` reports the
  episode's score so far as `info["score"]`), the last one each episode reported, averaged
  over the episodes that reported one; None for a game without a score.

ratio_to_npc = the policy's MDBI / the NPC's MDBI on the same episodes (None when the NPC
drove nowhere, which would make any ratio meaningless).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.games.base import Observation

INCIDENT_MERGE_M = 10.0
MIN_DISTANCE_M = 1.0

TickKind = Literal["reset", "step", "respawn"]


@dataclass(frozen=True)
class Tick:
    """What the scores need from one observation (and why it was taken)."""

    kind: TickKind
    game_time: float
    odometer: float
    speed: float = 0.0
    lane_offset: float | None = None
    collision: bool = False
    targets_reached: int = 0
    purpose_distance: float = 0.0
    target: tuple[float, float] | None = None  # the target's identity where the game tells it
    route: tuple[int, float] | None = None  # (which route, metres along it) where the game tells it
    score: float | None = None  # the game's own score of the episode so far, where it has one

    @classmethod
    def of(cls, obs: Observation, kind: TickKind) -> Tick:
        target = obs.info.get("target")
        route = obs.info.get("route")
        score = obs.info.get("score")
        return cls(
            kind=kind,
            game_time=float(obs.game_time),
            odometer=float(obs.odometer),
            speed=float(obs.speed),
            lane_offset=None if obs.lane_offset is None else float(obs.lane_offset),
            collision=bool(obs.collision) and kind == "step",
            targets_reached=int(obs.targets_reached),
            purpose_distance=float(obs.purpose[0]),
            target=None if target is None else (float(target[0]), float(target[1])),
            route=None if route is None else (int(route[0]), float(route[1])),
            score=None if score is None else float(score),
        )


@dataclass
class Trace:
    """One evaluation episode: where it was driven and every tick the driver saw."""

    environment: str
    map_seed: int
    fps: float
    ticks: list[Tick] = field(default_factory=list)

    def add(self, obs: Observation, kind: TickKind) -> None:
        self.ticks.append(Tick.of(obs, kind))


@dataclass(frozen=True)
class Metrics:
    """The scores of one or more episodes; `as_dict` is what goes to Redis and JSON."""

    episodes: int
    steps: int
    duration_s: float
    distance_m: float
    collisions: int
    unstucks: int
    incidents: int
    incidents_per_km: float
    mean_distance_between_incidents_m: float
    censored: bool
    mean_abs_lane_offset_m: float | None
    targets_reached: int
    progress_m: float
    progress_per_km: float
    mean_speed_mps: float
    game_score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Counts:
    """Additive raw counts; metrics are derived from the pooled counts, never averaged."""

    episodes: int = 0
    steps: int = 0
    duration_s: float = 0.0
    distance_m: float = 0.0
    collisions: int = 0
    unstucks: int = 0
    incidents: int = 0
    lane_sum: float = 0.0
    lane_n: int = 0
    targets_reached: int = 0
    progress_m: float = 0.0
    game_score: float = 0.0  # summed over the episodes that reported a score ...
    scored: int = 0  # ... and how many did

    def add(self, other: _Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _count(trace: Trace) -> _Counts:
    c = _Counts(episodes=1)
    since_collision: float | None = None  # metres driven since the last collision, if one is "open"
    prev: Tick | None = None
    for tick in trace.ticks:
        if prev is None:
            prev = tick
            continue
        moved = max(0.0, tick.odometer - prev.odometer)
        c.distance_m += moved
        c.targets_reached += max(0, tick.targets_reached - prev.targets_reached)
        if since_collision is not None:
            since_collision += moved
        if tick.kind == "respawn":
            c.unstucks += 1
            if since_collision is not None and since_collision <= INCIDENT_MERGE_M:
                since_collision = None  # part of that collision's incident
            else:
                c.incidents += 1
        elif tick.kind == "step":
            c.steps += 1
            if tick.collision:
                c.collisions += 1
                c.incidents += 1
                since_collision = 0.0
            if tick.lane_offset is not None:
                c.lane_sum += abs(tick.lane_offset)
                c.lane_n += 1
            same_target = tick.targets_reached == prev.targets_reached and (
                tick.target is None or prev.target is None or tick.target == prev.target)
            if tick.route is not None and prev.route is not None:
                if same_target and tick.route[0] == prev.route[0]:
                    c.progress_m += tick.route[1] - prev.route[1]
            elif same_target:
                c.progress_m += prev.purpose_distance - tick.purpose_distance
        prev = tick
    c.duration_s = c.steps / trace.fps
    last = next((t.score for t in reversed(trace.ticks) if t.score is not None), None)
    if last is not None:
        c.game_score, c.scored = last, 1
    return c


def _metrics(c: _Counts) -> Metrics:
    km = max(c.distance_m, MIN_DISTANCE_M) / 1000.0
    return Metrics(
        episodes=c.episodes,
        steps=c.steps,
        duration_s=c.duration_s,
        distance_m=c.distance_m,
        collisions=c.collisions,
        unstucks=c.unstucks,
        incidents=c.incidents,
        incidents_per_km=c.incidents / km,
        mean_distance_between_incidents_m=c.distance_m / (c.incidents + c.episodes) if c.episodes else 0.0,
        censored=c.incidents == 0,
        mean_abs_lane_offset_m=c.lane_sum / c.lane_n if c.lane_n else None,
        targets_reached=c.targets_reached,
        progress_m=c.progress_m,
        progress_per_km=c.progress_m / km,
        mean_speed_mps=c.distance_m / c.duration_s if c.duration_s > 0 else 0.0,
        game_score=c.game_score / c.scored if c.scored else None,
    )


def episode_metrics(trace: Trace) -> Metrics:
    """The scores of one episode."""
    return _metrics(_count(trace))


#: The additive per-episode counts kept in every score record (what the confidence intervals resample).
EPISODE_FIELDS = ("distance_m", "incidents", "steps", "lane_sum", "lane_n", "progress_m", "game_score", "scored")


def episode_counts(trace: Trace) -> dict[str, Any]:
    """One episode's additive counts, with where it was driven: the unit the bootstrap resamples."""
    c = _count(trace)
    return {"environment": trace.environment, "map_seed": trace.map_seed,
            **{name: getattr(c, name) for name in EPISODE_FIELDS}}


def pooled_metrics(traces: Iterable[Trace]) -> Metrics:
    """The scores of several episodes from their summed counts (not a mean of per-episode ratios)."""
    total = _Counts()
    for trace in traces:
        total.add(_count(trace))
    return _metrics(total)


def ratio_to_npc(policy: Metrics | dict[str, Any], npc: Metrics | dict[str, Any]) -> float | None:
    """The policy's mean distance between incidents over the NPC's; None if the NPC never moved."""
    p = policy.as_dict() if isinstance(policy, Metrics) else policy
    n = npc.as_dict() if isinstance(npc, Metrics) else npc
    reference = float(n["mean_distance_between_incidents_m"])
    if not math.isfinite(reference) or reference <= 0.0:
        return None
    return float(p["mean_distance_between_incidents_m"]) / reference


def by_environment(traces: Sequence[Trace]) -> dict[str, Metrics]:
    """Pooled scores per environment name, in the order the environments first appear."""
    names = list(dict.fromkeys(t.environment for t in traces))
    return {name: pooled_metrics(t for t in traces if t.environment == name) for name in names}
