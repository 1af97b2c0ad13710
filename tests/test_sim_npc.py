"""The NPC autopilot drives kilometres on several maps and cars with few incidents."""

from __future__ import annotations

import pytest

from pipeline.games.base import Environment
from pipeline.games.sim import SimGame

CASES = [  # (map seed, car, style, weather): cities, outskirts and highway get visited on each
    (21, "sedan", "normal", "clear"),
    (22, "truck", "calm", "rain"),
    (9002, "sports", "aggressive", "fog"),
]


@pytest.mark.parametrize(("seed", "car", "style", "weather"), CASES)
def test_npc_drives_with_few_incidents(seed: int, car: str, style: str, weather: str) -> None:
    game = SimGame()
    obs = game.reset(Environment(map_seed=seed, episode_seed=7, car=car, npc_style=style, weather=weather, traffic_density=0.7))
    stuck, off_road, ticks, perturbed = 0, 0, 0, 0
    while obs.odometer < 1300.0 and obs.game_time < 330.0:
        obs = game.step()
        ticks += 1
        off_road += not obs.info["on_road"]
        perturbed += bool(obs.info.get("perturbed"))
        stuck += bool(obs.info.get("respawned"))  # the NPC gave up by itself
        if obs.info["stuck"]:
            stuck += 1
            obs = game.respawn()
    assert obs.odometer >= 1300.0, f"only {obs.odometer:.0f} m in {obs.game_time:.0f} s"
    assert obs.collisions + stuck <= 2, (obs.collisions, stuck)
    assert off_road / ticks < 0.03
    assert obs.targets_reached >= 1 or game.route_progress()[1] > 500.0  # it follows its route
    assert perturbed > 0  # the data contains recoveries
