"""Driving metrics on scripted trajectories: known lane offsets, a known crash, exact numbers."""

from __future__ import annotations

import math

import pytest

from pipeline.evaluate.metrics import (
    MIN_DISTANCE_M,
    Tick,
    Trace,
    by_environment,
    episode_metrics,
    pooled_metrics,
    ratio_to_npc,
)


def straight(n: int, metres_per_step: float, lane: list[float], start_odo: float = 0.0,
             target_at: float = 1000.0) -> list[Tick]:
    """n steps at constant speed straight toward a target; lane offsets cycle through `lane`."""
    ticks = []
    for i in range(1, n + 1):
        odo = start_odo + i * metres_per_step
        ticks.append(Tick("step", i / 10, odo, metres_per_step * 10, lane[(i - 1) % len(lane)], False, 0,
                          target_at - odo, (0.0, target_at)))
    return ticks


def trace(ticks: list[Tick], env: str = "day", fps: float = 10.0, target_at: float = 1000.0) -> Trace:
    reset = Tick("reset", 0.0, 0.0, 0.0, 0.0, False, 0, target_at, (0.0, target_at))
    return Trace(env, 9001, fps, [reset, *ticks])


def test_clean_drive_exact() -> None:
    # 100 steps of 1 m at 10 fps: 100 m in 10 s; lane offsets +0.2, -0.4 -> mean |offset| 0.3
    m = episode_metrics(trace(straight(100, 1.0, [0.2, -0.4])))
    assert m.steps == 100 and m.duration_s == 10.0
    assert m.distance_m == pytest.approx(100.0, abs=1e-9)
    assert m.mean_speed_mps == pytest.approx(10.0)
    assert m.mean_abs_lane_offset_m == pytest.approx(0.3)
    assert m.collisions == m.unstucks == m.incidents == 0
    assert m.incidents_per_km == 0.0
    # no incident: the one incident-free stretch is the whole episode, flagged as a lower bound
    assert m.mean_distance_between_incidents_m == pytest.approx(100.0) and m.censored
    assert m.progress_m == pytest.approx(100.0) and m.progress_per_km == pytest.approx(1000.0)
    assert m.targets_reached == 0


def crash_episode() -> list[Tick]:
    """40 m, a crash into a wall, pinned (no movement), Unstuck respawn, 60 m more, another Unstuck."""
    ticks = straight(40, 1.0, [0.5])
    crash = ticks[-1]
    ticks[-1] = Tick("step", crash.game_time, crash.odometer, 0.0, 0.5, True, 0, crash.purpose_distance, crash.target)
    t = crash.game_time
    for k in range(1, 41):  # 4 s pinned against the wall: no distance, lane offset 1.5
        ticks.append(Tick("step", t + k / 10, 40.0, 0.0, 1.5, False, 0, crash.purpose_distance, crash.target))
    ticks.append(Tick("respawn", t + 4.5, 40.0, 0.0, 0.0, False, 0, 500.0, (9.0, 9.0)))  # new place, new route
    for k in range(1, 61):
        ticks.append(Tick("step", t + 4.5 + k / 10, 40.0 + k, 10.0, -0.5, False, 0, 500.0 - k, (9.0, 9.0)))
    ticks.append(Tick("respawn", t + 11.0, 100.0, 0.0, 0.0, False, 0, 300.0, (7.0, 7.0)))
    return ticks


def test_known_crash_exact() -> None:
    m = episode_metrics(trace(crash_episode()))
    assert m.steps == 40 + 40 + 60
    assert m.distance_m == pytest.approx(100.0)
    assert m.collisions == 1 and m.unstucks == 2
    # the first Unstuck follows the crash within INCIDENT_MERGE_M: one incident; the second is its own
    assert m.incidents == 2
    assert m.incidents_per_km == pytest.approx(20.0)
    # 2 incidents cut the episode into 3 stretches: 100 m / 3
    assert m.mean_distance_between_incidents_m == pytest.approx(100.0 / 3) and not m.censored
    # |lane|: 40 x 0.5, 40 x 1.5, 60 x 0.5 over 140 steps
    assert m.mean_abs_lane_offset_m == pytest.approx((40 * 0.5 + 40 * 1.5 + 60 * 0.5) / 140)
    # 40 m toward the first target (the crash step too), 60 m toward the second; respawns are not steps
    assert m.progress_m == pytest.approx(100.0)
    assert m.mean_speed_mps == pytest.approx(100.0 / 14.0)


def test_unstuck_far_from_a_crash_is_its_own_incident() -> None:
    ticks = straight(20, 1.0, [0.0])
    last = ticks[-1]
    ticks[-1] = Tick("step", last.game_time, last.odometer, 10.0, 0.0, True, 0, last.purpose_distance, last.target)
    ticks += straight(15, 1.0, [0.0], start_odo=20.0)  # 15 m after the crash (> 10 m)
    ticks.append(Tick("respawn", 9.0, 35.0, 0.0, 0.0, False, 0, 800.0, (1.0, 1.0)))
    m = episode_metrics(trace(ticks))
    assert m.collisions == 1 and m.unstucks == 1 and m.incidents == 2


def test_targets_and_reversing() -> None:
    ticks = straight(10, 2.0, [0.0], target_at=20.0)  # reaches the target area at 20 m
    reach = ticks[-1]
    ticks[-1] = Tick("step", reach.game_time, reach.odometer, 20.0, 0.0, False, 1, 300.0, (5.0, 5.0))
    # reverse 5 m away from the new target: the odometer still counts it, progress goes down
    for k in range(1, 6):
        ticks.append(Tick("step", 1.0 + k / 10, 20.0 + k, -10.0, 0.0, False, 1, 300.0 + k, (5.0, 5.0)))
    m = episode_metrics(trace(ticks, target_at=20.0))
    assert m.targets_reached == 1
    assert m.distance_m == pytest.approx(25.0)
    # 9 steps x 2 m toward target 1 (the reaching step counts 0), then -5 m
    assert m.progress_m == pytest.approx(18.0 - 5.0)


def test_pooled_over_episodes_and_environments() -> None:
    clean = trace(straight(100, 1.0, [0.2]), env="day")
    crashed = trace(crash_episode(), env="rain")
    both = pooled_metrics([clean, crashed])
    assert both.episodes == 2 and both.distance_m == pytest.approx(200.0)
    assert both.incidents == 2
    # 2 incidents + 2 episodes = 4 incident-free stretches of 200 m in all
    assert both.mean_distance_between_incidents_m == pytest.approx(50.0)
    assert both.incidents_per_km == pytest.approx(10.0)
    envs = by_environment([clean, crashed])
    assert list(envs) == ["day", "rain"] and envs["rain"].incidents == 2 and envs["day"].incidents == 0


def test_ratio_to_npc_and_edge_cases() -> None:
    npc = episode_metrics(trace(straight(100, 1.0, [0.0])))  # 100 m, no incident
    model = episode_metrics(trace(crash_episode()))  # 100 m / 3
    assert ratio_to_npc(model, npc) == pytest.approx(1 / 3)
    assert ratio_to_npc(npc, npc) == 1.0
    assert ratio_to_npc(model.as_dict(), npc.as_dict()) == pytest.approx(1 / 3)
    parked = episode_metrics(trace([]))
    assert ratio_to_npc(model, parked) is None  # the NPC drove nowhere: no meaningful ratio
    # a car that never moves but is respawned: distance floors at MIN_DISTANCE_M, finite per km
    stuck = trace([Tick("step", 0.1, 0.0), Tick("respawn", 0.6, 0.0), Tick("step", 0.7, 0.0)])
    m = episode_metrics(stuck)
    assert m.incidents == 1 and m.distance_m == 0.0 and m.mean_speed_mps == 0.0
    assert m.incidents_per_km == pytest.approx(1 / (MIN_DISTANCE_M / 1000))
    assert math.isfinite(m.incidents_per_km) and m.mean_distance_between_incidents_m == 0.0
    assert m.mean_abs_lane_offset_m is None  # the game reported no lane offset


def test_the_npc_progresses_along_its_route_even_where_the_road_leads_away() -> None:
    """Issue 18 #7: the NPC's progress_m was negative: a straight line to the target grows while
    the road to it bends away (10 s on held-out map 9002: -117 m while it drove 117 m; on this
    episode 57 m of 131 m)."""
    from pipeline.config import load_config
    from pipeline.evaluate.closed_loop import NPC, EvalSettings, Evaluator
    from pipeline.games.options import game_options
    from pipeline.games.sim import SimGame

    cfg = load_config(overrides={"evaluator": {"environments": ["night"]}})
    game = SimGame(**game_options(cfg, realtime=False))
    try:
        (trace,) = Evaluator(game, EvalSettings.from_config(cfg, episodes=1, seconds=10.0)).run(NPC)
    finally:
        game.close()
    m = pooled_metrics([trace])
    assert m.distance_m > 50.0
    assert 0.8 * m.distance_m < m.progress_m <= m.distance_m + 1.0, (m.progress_m, m.distance_m)
