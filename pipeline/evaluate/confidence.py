"""Confidence intervals for the driving scores: a percentile bootstrap over episodes.

Why: a version's score is a handful of episodes, and one incident more or less moves
ratio_to_npc by 0.2–0.4 when there are four. An interval says how far the figure can be
trusted, and `best` moves only when a version is better by more than that (scoreboard).

Every score is a pooled ratio of sums over episodes (`pipeline.evaluate.metrics`), so a resample
is a multiset of the plan's episodes and its statistic is computed from the summed counts
of the episodes drawn, exactly as the point estimate is from all of them:

- mean_distance_between_incidents_m = Σ distance / (Σ incidents + n)
- incidents_per_km = Σ incidents / (max(Σ distance, 1 m) / 1000)
- mean_abs_lane_offset_m = Σ lane_sum / Σ lane_n
- game_score = Σ game_score / Σ scored (the game's own score, where it has one)
- ratio_to_npc = the model's MDBI / the NPC's MDBI, both over the *same* drawn episode
  indices (paired: the NPC drove exactly the same starts, so a hard start counts against
  both and the interval is not widened by differences between starts that both drivers share).

The interval is the percentile interval of the resampled statistics (numpy's linear
quantiles at (1 - level)/2 and (1 + level)/2). With at most EXACT_MAX_EPISODES episodes
every one of the n**n equally likely ordered resamples is enumerated: the exact bootstrap
distribution, no randomness. Above that, `count` resamples are drawn from numpy's
`default_rng(SEED)`: the same episodes always give the same interval. One episode gives
no interval (None): nothing to resample.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.evaluate.metrics import MIN_DISTANCE_M

#: The fixed seed of the Monte-Carlo resamples (reproducible intervals).
SEED = 20
#: Up to this many episodes the bootstrap distribution is enumerated exactly (5**5 = 3125 resamples).
EXACT_MAX_EPISODES = 5
#: The statistics that get an interval (the model's own, plus ratio_to_npc when the NPC's episodes pair up).
STATISTICS = ("ratio_to_npc", "mean_distance_between_incidents_m", "incidents_per_km", "mean_abs_lane_offset_m",
              "game_score")


@dataclass(frozen=True)
class Resampling:
    """Which episodes each resample draws: `indices[b]` lists the n episode indices of resample b."""

    indices: np.ndarray  # (resamples, n) int
    method: str  # "exact" (every ordered resample once) | "bootstrap" (random, seeded)


def resampling(n: int, count: int, seed: int = SEED) -> Resampling:
    """All n**n ordered resamples for small n, else `count` random ones from `default_rng(seed)`."""
    if n < 1:
        raise ValueError("resampling needs at least one episode")
    if n <= EXACT_MAX_EPISODES:
        return Resampling(np.array(list(itertools.product(range(n), repeat=n)), dtype=np.int64), "exact")
    rng = np.random.default_rng(seed)
    return Resampling(rng.integers(0, n, size=(count, n), dtype=np.int64), "bootstrap")


def percentile_interval(values: np.ndarray, level: float) -> list[float] | None:
    """[low, high] of the finite values at the central `level`; None if no value is finite."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = np.quantile(finite, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return [float(low), float(high)]


def _sums(episodes: Sequence[dict[str, Any]], indices: np.ndarray) -> dict[str, np.ndarray]:
    """Per resample, each count summed over the episodes it drew."""
    out = {}
    for name in ("distance_m", "incidents", "lane_sum", "lane_n", "game_score", "scored"):
        column = np.array([float(e.get(name, 0.0)) for e in episodes], dtype=np.float64)  # older records lack scores
        out[name] = column[indices].sum(axis=1)
    return out


def _mdbi(s: dict[str, np.ndarray], n: int) -> np.ndarray:
    return s["distance_m"] / (s["incidents"] + n)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def paired(episodes: Sequence[dict[str, Any]], npc_episodes: Sequence[dict[str, Any]] | None) -> bool:
    """True when the other driver (the NPC, or another version) drove the same plan, episode for
    episode (same environments and maps, in order)."""
    if not npc_episodes or len(npc_episodes) != len(episodes):
        return False
    return all((a["environment"], a["map_seed"]) == (b["environment"], b["map_seed"])
               for a, b in zip(episodes, npc_episodes, strict=True))


def score_intervals(episodes: Sequence[dict[str, Any]], npc_episodes: Sequence[dict[str, Any]] | None,
                    level: float, count: int, seed: int = SEED) -> dict[str, Any] | None:
    """Percentile-bootstrap intervals of the headline scores from per-episode counts (None below 2 episodes).

    `episodes` and `npc_episodes` are `evaluation.episode_counts` dicts; ratio_to_npc gets an
    interval only when the two pair up (`paired`).
    """
    n = len(episodes)
    if n < 2:
        return None
    rs = resampling(n, count, seed)
    s = _sums(episodes, rs.indices)
    mdbi = _mdbi(s, n)
    km = np.maximum(s["distance_m"], MIN_DISTANCE_M) / 1000.0
    out: dict[str, Any] = {"level": level, "method": rs.method, "resamples": int(rs.indices.shape[0]),
                           "episodes": n, "ratio_to_npc": None}
    if paired(episodes, npc_episodes):
        assert npc_episodes is not None
        out["ratio_to_npc"] = percentile_interval(_divide(mdbi, _mdbi(_sums(npc_episodes, rs.indices), n)), level)
    out["mean_distance_between_incidents_m"] = percentile_interval(mdbi, level)
    out["incidents_per_km"] = percentile_interval(s["incidents"] / km, level)
    out["mean_abs_lane_offset_m"] = percentile_interval(_divide(s["lane_sum"], s["lane_n"]), level)
    out["game_score"] = percentile_interval(_divide(s["game_score"], s["scored"]), level)
    return out


def paired_claim(candidate: dict[str, Any], best: dict[str, Any], rank_by: str = "ratio_to_npc") -> float | None:
    """What `candidate` offers against `best` when both drove the same plan: the best's point
    estimate moved by the low end of the candidate's gain over the same resampled episodes.

    Every version drives the same reproducible starts, and most of a score's interval is how
    hard those starts are, which two versions share: compared episode for episode, a version
    that is better on the same starts is told apart from the best with far fewer episodes than
    two separate intervals need (docs/evaluation.md "(af)"). The gain is the ratio of the two
    mean distances between incidents for ratio_to_npc (the NPC's reference is the same for
    both, so best × gain is the candidate's ratio at the point estimate), the difference of
    game scores for game_score. None when the two do not pair (another plan, reference or
    episode list, or too few episodes): then the candidate's own lower bound is its claim.
    """
    episodes, best_episodes = candidate.get("episodes") or [], best.get("episodes") or []
    point, intervals = best.get(rank_by), candidate.get("intervals") or {}
    if (point is None or candidate.get(rank_by) is None or candidate.get("reference") != best.get("reference")
            or len(episodes) < 2 or not paired(episodes, best_episodes)):
        return None
    n = len(episodes)
    rs = resampling(n, int(intervals.get("resamples") or 2000))
    level = float(intervals.get("level") or 0.9)
    mine, theirs = _sums(episodes, rs.indices), _sums(best_episodes, rs.indices)
    if rank_by == "game_score":
        gain = percentile_interval(_divide(mine["game_score"], mine["scored"])
                                   - _divide(theirs["game_score"], theirs["scored"]), level)
        return None if gain is None else float(point) + gain[0]
    gain = percentile_interval(_divide(_mdbi(mine, n), _mdbi(theirs, n)), level)
    return None if gain is None else float(point) * gain[0]


def lower_bound(record: dict[str, Any], name: str = "ratio_to_npc") -> float | None:
    """The interval's low end of `name` in a score record; the point estimate when it has no interval."""
    point = record.get(name)
    interval = (record.get("intervals") or {}).get(name)
    if interval is not None:
        return float(interval[0])
    return None if point is None else float(point)
