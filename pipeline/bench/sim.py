"""`charles bench sim`: simulator steps per second on one core, and NPC incidents per km.

Figures are measured on one pinned CPU with OpenCV single-threaded. Throughput is counted
per CPU-second of this process (what one free core delivers) and, alongside, per
wall-clock second, which drops when other processes share the core.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pipeline.bench import result

TARGET_STEPS_PER_S = 500.0
_SEEDS = (1, 2, 9001)
_WEATHER = (("clear", 12.0), ("rain", 17.0), ("clear", 22.0))


def _pin_one_core() -> tuple[set[int] | None, int]:
    if not hasattr(os, "sched_getaffinity"):
        return None, -1
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    return before, cpu


def _throughput(seconds: float, cinematic: bool) -> tuple[float, float, int]:
    """(steps per CPU-second, steps per wall second, steps) over a few maps and weathers."""
    from pipeline.games.base import Environment
    from pipeline.games.sim import SimGame

    game = SimGame()
    steps, cpu, wall = 0, 0.0, 0.0
    for seed, (weather, hours) in zip(_SEEDS, _WEATHER, strict=True):
        game.reset(Environment(map_seed=seed, episode_seed=seed, weather=weather, time_of_day=hours, traffic_density=0.6))
        for _ in range(30):  # warm up caches
            game.step()
        c0, w0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - w0 < seconds / len(_SEEDS):
            for _ in range(30):
                obs = game.step()
                if cinematic:
                    game.cinematic()
                if obs.info.get("stuck"):
                    game.respawn()
            steps += 30
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
    game.close()
    return steps / max(cpu, 1e-9), steps / max(wall, 1e-9), steps


def _incidents(km_per_seed: float) -> dict[str, float]:
    """Let the NPC drive on a few maps; count crashes and respawns for being stuck."""
    from pipeline.games.base import Environment
    from pipeline.games.sim import SimGame

    game = SimGame()
    km, crashes, stuck, off_road, ticks = 0.0, 0, 0, 0, 0
    for seed in _SEEDS:
        obs = game.reset(Environment(map_seed=seed, episode_seed=seed + 100, traffic_density=0.6))
        while obs.odometer < km_per_seed * 1000 and obs.game_time < km_per_seed * 400:
            obs = game.step()
            ticks += 1
            off_road += not obs.info.get("on_road", True)
            stuck += bool(obs.info.get("respawned"))  # the NPC gave up and teleported
            if obs.info.get("stuck"):
                stuck += 1
                obs = game.respawn()
        km += obs.odometer / 1000
        crashes += obs.collisions
    game.close()
    return {"km_driven": round(km, 3), "npc_collisions": crashes, "npc_stuck_respawns": stuck,
            "npc_incidents_per_km": round((crashes + stuck) / max(km, 1e-9), 3),
            "npc_off_road_share": round(off_road / max(ticks, 1), 4)}


def run(config_path: str | None = None, seconds: float = 10.0, **_: Any) -> dict[str, Any]:
    """Hood-only and hood+cinematic steps/s at 160x120 / 640x360, and NPC incidents per km."""
    import cv2

    cv2.setNumThreads(1)
    before, cpu = _pin_one_core()
    try:
        hood_cpu, hood_wall, hood_steps = _throughput(seconds, cinematic=False)
        cin_cpu, cin_wall, _ = _throughput(seconds / 2, cinematic=True)
        incidents = _incidents(km_per_seed=max(0.5, seconds / 10.0))
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    details = {
        "hood_only_steps_per_s": round(hood_cpu, 1),
        "hood_only_steps_per_wall_s": round(hood_wall, 1),
        "with_cinematic_steps_per_s": round(cin_cpu, 1),
        "with_cinematic_steps_per_wall_s": round(cin_wall, 1),
        "realtime_factor": round(hood_cpu / 30.0, 1),
        "target_steps_per_s": TARGET_STEPS_PER_S,
        "steps_measured": hood_steps,
        "hood": "160x120", "cinematic": "640x360", "pinned_cpu": cpu,
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        **incidents,
    }
    return result(name="sim", value=hood_cpu, unit="steps/s", ceiling=None, details=details)
