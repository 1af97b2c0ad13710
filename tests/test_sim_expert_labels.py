"""DAgger labels: with `label_with_npc` someone else drives and the NPC still says what it would do."""

from __future__ import annotations

import math

import numpy as np

from pipeline.games.base import Controls, Environment
from pipeline.games.sim import SimGame
from pipeline.games.sim.objects import BUILDING

ENV = Environment(map_seed=5, episode_seed=3, npc_style="aggressive", traffic_density=0.5)


def _game(**options: object) -> SimGame:
    return SimGame(hood_size=(48, 32), cinematic_size=(64, 36), minimap=False, **options)


def test_labels_are_the_npc_commands_in_the_same_states() -> None:
    """Replaying the NPC's own applied controls visits its states: every label must match its
    unperturbed command there, perturbations included, while the given controls are applied."""
    npc, learner = _game(), _game(label_with_npc=True)
    npc.reset(ENV)
    learner.reset(ENV)
    perturbed = 0
    for _ in range(30 * 40):
        a = npc.step(None)
        b = learner.step(a.controls)
        assert not a.info.get("respawned")
        assert b.info["expert"] == a.info["expert"]
        assert b.controls == a.controls and b.position == a.position
        perturbed += bool(a.info["perturbed"])
    assert perturbed > 0  # labels differed from the applied controls somewhere


def test_first_label_does_not_depend_on_the_applied_controls() -> None:
    npc, learner = _game(), _game(label_with_npc=True)
    npc.reset(ENV)
    learner.reset(ENV)
    obs = learner.step(Controls(-1.0, 1.0))
    assert obs.info["expert"] == npc.step(None).info["expert"]
    assert obs.controls == Controls(-1.0, 1.0)


def test_label_steers_back_to_the_lane() -> None:
    game = _game(label_with_npc=True)
    game.reset(Environment(map_seed=5, episode_seed=3, traffic_density=0.0))
    for _ in range(30 * 4):
        obs = game.step(None)  # the NPC gets the car going
    assert obs.speed > 4.0
    for _ in range(20):
        obs = game.step(Controls(0.3, 0.6))  # swerve right
    assert obs.lane_offset is not None and obs.lane_offset < -0.3
    assert obs.info["expert"][1] < -0.2  # the expert steers left, back to the lane


def test_standing_still_without_pushing_is_labelled_setting_off() -> None:
    """A learner that brakes is not pinned: the NPC wants to go, never to reverse."""
    game = _game(label_with_npc=True)
    game.reset(Environment(map_seed=5, episode_seed=3, traffic_density=0.0))
    for _ in range(30 * 5):
        obs = game.step(Controls(0.0, 0.0))
        assert obs.info["expert"][0] > 0.2 and not obs.info["unstucking"]


def test_pinned_against_a_wall_is_labelled_reversing() -> None:
    game = _game(label_with_npc=True)
    game.reset(Environment(map_seed=4, traffic_density=0.0))
    obs_ = game.world.obstacles
    for b in np.flatnonzero((obs_.kind == BUILDING) & (np.abs(obs_.ang) < 1e-9)):
        ahead = (4.0, 8.0, 14.0, 20.0)
        free = [
            obs_.push_out(np.full(3, obs_.x[b] + obs_.hl[b] + d), np.full(3, obs_.y[b]), 1.5)[2]
            for d in ahead
        ]
        if not any(free):
            break
    game.car.x, game.car.y = float(obs_.x[b] + obs_.hl[b] + 8.0), float(obs_.y[b])
    game.car.heading, game.car.speed = math.pi, 0.0  # facing the building, 8 m away
    labels = [game.step(Controls(1.0, 0.0)).info for _ in range(30 * 6)]
    assert any(i["unstucking"] and i["expert"][0] < -0.5 for i in labels)


def test_default_step_is_unchanged() -> None:
    game = _game()
    game.reset(ENV)
    assert "expert" not in game.step(Controls(0.5, 0.0)).info
    assert {"expert", "perturbed", "unstucking"} <= set(game.step(None).info)
