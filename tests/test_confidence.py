"""Bootstrap intervals of the driving scores: exact on hand-computable data, and the same as
a direct computation through the metrics' own definitions on the Monte-Carlo path."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate.confidence import (
    EXACT_MAX_EPISODES,
    SEED,
    lower_bound,
    paired_claim,
    resampling,
    score_intervals,
)
from pipeline.evaluate.metrics import Tick, Trace, episode_counts, pooled_metrics, ratio_to_npc


def ep(distance: float, incidents: int, env: str = "day", seed: int = 9001, lane: float = 0.5) -> dict:
    return {"environment": env, "map_seed": seed, "distance_m": distance, "incidents": incidents,
            "steps": 100, "lane_sum": lane * 100, "lane_n": 100, "progress_m": 0.0}


def test_one_episode_has_no_interval_and_identical_episodes_a_point() -> None:
    assert score_intervals([ep(100, 1)], [ep(200, 0)], 0.9, 2000) is None
    same = [ep(120, 2, seed=9001 + i) for i in range(3)]
    npc = [ep(300, 1, seed=9001 + i) for i in range(3)]
    ci = score_intervals(same, npc, 0.9, 2000)
    assert ci is not None and ci["method"] == "exact" and ci["resamples"] == 27 and ci["episodes"] == 3
    # every resample is the same three numbers: the interval is the point (120/3 / (300/2) = 40/150)
    assert ci["ratio_to_npc"] == [pytest.approx(40 / 150)] * 2
    assert ci["mean_distance_between_incidents_m"] == [pytest.approx(40.0)] * 2
    assert ci["incidents_per_km"] == [pytest.approx(2 / 0.12)] * 2
    assert ci["mean_abs_lane_offset_m"] == [pytest.approx(0.5)] * 2


def test_two_episodes_exact_by_hand() -> None:
    # model: A = 100 m, 0 incidents; B = 100 m, 3 incidents. NPC on the same starts: 200 m with 0, 200 m with 2.
    model = [ep(100, 0, "day", 9001, lane=0.2), ep(100, 3, "night", 9002, lane=0.6)]
    npc = [ep(200, 0, "day", 9001), ep(200, 2, "night", 9002)]
    ci = score_intervals(model, npc, 0.9, 2000)
    assert ci is not None and ci["method"] == "exact" and ci["resamples"] == 4
    # the four equally likely ordered resamples AA, AB, BA, BB:
    #   model MDBI = 200/2 = 100, 200/5 = 40 (twice), 200/8 = 25
    #   NPC MDBI (paired) = 400/2 = 200, 400/4 = 100 (twice), 400/6 = 66.67
    #   ratio = 0.5, 0.4, 0.4, 0.375 -> sorted 0.375, 0.4, 0.4, 0.5
    # numpy's linear quantile at 0.05 sits at position 0.15, at 0.95 at position 2.85:
    assert ci["ratio_to_npc"] == [pytest.approx(0.375 + 0.15 * 0.025), pytest.approx(0.4 + 0.85 * 0.1)]
    # incidents per km over 200 m: 0, 15, 15, 30
    assert ci["incidents_per_km"] == [pytest.approx(0.15 * 15), pytest.approx(15 + 0.85 * 15)]
    # MDBI 25, 40, 40, 100
    assert ci["mean_distance_between_incidents_m"] == [pytest.approx(25 + 0.15 * 15), pytest.approx(40 + 0.85 * 60)]
    # lane offsets 0.2, 0.4, 0.4, 0.6
    assert ci["mean_abs_lane_offset_m"] == [pytest.approx(0.2 + 0.15 * 0.2), pytest.approx(0.4 + 0.85 * 0.2)]
    # unpaired (the NPC drove other starts, or fewer): no ratio interval, the model's own still there
    other = score_intervals(model, [ep(200, 0, "day", 9001), ep(200, 2, "rain", 9003)], 0.9, 2000)
    assert other is not None and other["ratio_to_npc"] is None and other["incidents_per_km"] == ci["incidents_per_km"]
    assert score_intervals(model, npc[:1], 0.9, 2000)["ratio_to_npc"] is None  # type: ignore[index]


def crash_trace(env: str, seed: int, metres: int, crashes: int, fps: float = 10.0) -> Trace:
    """`metres` steps of 1 m, a collision every metres // (crashes + 1) steps."""
    ticks = [Tick("reset", 0.0, 0.0, 0.0, 0.0)]
    every = metres // (crashes + 1)
    for i in range(1, metres + 1):
        hit = crashes > 0 and i % every == 0 and i // every <= crashes
        ticks.append(Tick("step", i / fps, float(i), 10.0, 0.1 * (i % 5), hit))
    return Trace(env, seed, fps, ticks)


def test_monte_carlo_path_equals_a_direct_computation_from_the_metrics() -> None:
    model = [crash_trace("day", 9001 + i, 80 + 10 * i, i % 3) for i in range(7)]
    npc = [crash_trace("day", 9001 + i, 150, 1 if i == 2 else 0) for i in range(7)]
    count = 300
    ci = score_intervals([episode_counts(t) for t in model], [episode_counts(t) for t in npc], 0.8, count)
    assert ci is not None and ci["method"] == "bootstrap" and ci["resamples"] == count and 7 > EXACT_MAX_EPISODES
    # the same draws, each scored by pooled_metrics/ratio_to_npc on the traces themselves
    draws = np.random.default_rng(SEED).integers(0, 7, size=(count, 7))
    ratios, per_km = [], []
    for idx in draws:
        m = pooled_metrics([model[i] for i in idx])
        ratios.append(ratio_to_npc(m, pooled_metrics([npc[i] for i in idx])))
        per_km.append(m.incidents_per_km)
    assert ci["ratio_to_npc"] == pytest.approx(list(np.quantile(ratios, [0.1, 0.9])), rel=1e-9)
    assert ci["incidents_per_km"] == pytest.approx(list(np.quantile(per_km, [0.1, 0.9])), rel=1e-9)
    point = ratio_to_npc(pooled_metrics(model), pooled_metrics(npc))
    assert point is not None and ci["ratio_to_npc"][0] < point < ci["ratio_to_npc"][1]
    # a fixed seed: the same episodes give the same interval, another seed another one
    again = score_intervals([episode_counts(t) for t in model], [episode_counts(t) for t in npc], 0.8, count)
    assert again == ci
    other = score_intervals([episode_counts(t) for t in model], [episode_counts(t) for t in npc], 0.8, count, seed=1)
    assert other is not None and other["ratio_to_npc"] != ci["ratio_to_npc"]


def test_resampling_enumerates_small_plans_and_lower_bound() -> None:
    rs = resampling(3, 10)
    assert rs.method == "exact" and rs.indices.shape == (27, 3) and len({tuple(r) for r in rs.indices}) == 27
    assert resampling(6, 10).indices.shape == (10, 6)
    assert lower_bound({"ratio_to_npc": 0.8, "intervals": {"ratio_to_npc": [0.6, 0.9]}}) == 0.6
    assert lower_bound({"ratio_to_npc": 0.8, "intervals": None}) == 0.8
    assert lower_bound({"ratio_to_npc": None}) is None


def _version(episodes: list[dict], ratio: float, reference: str = "plan-a") -> dict:
    return {"ratio_to_npc": ratio, "game_score": None, "reference": reference, "episodes": episodes,
            "intervals": {"level": 0.9, "resamples": 2000}}


def test_paired_claim_compares_two_versions_on_the_same_starts_exactly() -> None:
    # the best: 100 m with 0 incidents on a day start, 100 m with 3 on a night start (MDBI 200/5 = 40)
    best = _version([ep(100, 0, "day", 9001), ep(100, 3, "night", 9002)], 0.8)
    # the candidate went 20% farther on both starts with the same incidents: every resample's
    # MDBI is 1.2 x the best's, so its claim is exactly 1.2 x the best's point estimate
    farther = _version([ep(120, 0, "day", 9001), ep(120, 3, "night", 9002)], 0.96)
    assert paired_claim(farther, best) == pytest.approx(0.8 * 1.2)
    # the same episodes: gain 1 in every resample, the claim is the best's score (not better)
    assert paired_claim(_version(best["episodes"], 0.8), best) == pytest.approx(0.8)
    # one incident fewer on the night start; the four ordered resamples AA, AB, BA, BB:
    #   candidate MDBI 200/2, 200/4 (twice), 200/6; best 200/2, 200/5 (twice), 200/8
    #   gain 1, 1.25, 1.25, 1.333: numpy's 5th percentile sits at position 0.15 -> 1 + 0.15 * 0.25
    fewer = _version([ep(100, 0, "day", 9001), ep(100, 2, "night", 9002)], 1.0)
    assert paired_claim(fewer, best) == pytest.approx(0.8 * (1 + 0.15 * 0.25))
    # a game's own score: the difference of the two over the same resamples
    scored = [dict(e, game_score=10.0 * (i + 1), scored=1) for i, e in enumerate(best["episodes"])]
    plus_two = [dict(e, game_score=e["game_score"] + 2.0) for e in scored]
    assert paired_claim({**_version(plus_two, 0.8), "game_score": 17.0},
                        {**_version(scored, 0.8), "game_score": 15.0}, "game_score") == pytest.approx(17.0)
    # no pairing: another plan, other starts, one episode, no score
    assert paired_claim(_version(farther["episodes"], 0.96, "plan-b"), best) is None
    assert paired_claim(_version([ep(120, 0, "day", 9001), ep(120, 3, "rain", 9003)], 0.9), best) is None
    assert paired_claim(_version(farther["episodes"][:1], 0.9), _version(best["episodes"][:1], 0.8)) is None
    assert paired_claim({**farther, "ratio_to_npc": None}, best) is None
