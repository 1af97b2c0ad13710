"""The built-in simulator: physics, collisions, respawn, determinism, weather, Purpose, options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.games.base import Controls, Environment, Game, load_game
from pipeline.games.sim import SimGame, minimap_rect, physics
from pipeline.games.sim.objects import BUILDING

DT = 1 / 30


@pytest.fixture(scope="module")
def game() -> SimGame:
    return SimGame()


def _drive(car: physics.CarState, spec: physics.CarSpec, thr: float, steer: float, seconds: float) -> None:
    for _ in range(int(seconds * 30)):
        physics.step(car, spec, thr, steer, DT)


def test_protocol_and_loader() -> None:
    game = load_game("sim", hood_size=(96, 72), cinematic_size=(160, 90), fps=30.0, realtime=False, minimap=False)
    assert isinstance(game, Game)
    obs = game.reset(Environment(map_seed=3))
    assert obs.frame.shape == (72, 96, 3) and obs.frame.dtype == np.uint8
    assert game.cinematic().shape == (90, 160, 3)
    assert game.minimap_rect is None
    game.close()


def test_unknown_options_and_environment_values_are_rejected() -> None:
    with pytest.raises(ConfigError, match="minimapp"):
        SimGame(minimapp=True)
    game = SimGame()
    for bad in ({"weather": "snow"}, {"car": "bus"}, {"npc_style": "sleepy"}, {"traffic_density": 2.0}):
        with pytest.raises(ConfigError):
            game.reset(Environment(**bad))


def test_observation_fields_are_filled(game: SimGame) -> None:
    obs = game.reset(Environment(map_seed=11, episode_seed=2, traffic_density=0.5))
    for _ in range(40):
        obs = game.step()
    assert obs.frame.shape == (120, 160, 3) and obs.frame.dtype == np.uint8
    assert obs.purpose.dtype == np.float32 and obs.purpose.shape == (2,) and obs.purpose[0] > 0
    assert obs.speed > 1.0 and obs.odometer > 1.0
    assert obs.controls.acceleration_braking != 0.0  # the NPC's choice is reported
    assert obs.game_time == pytest.approx(40 / 30)
    assert obs.position is not None and obs.lane_offset is not None and abs(obs.lane_offset) < 2.0
    assert {"on_road", "stuck", "contact"} <= set(obs.info)


def test_braking_stops_then_reverses() -> None:
    spec, car = physics.CARS["sedan"], physics.CarState()
    _drive(car, spec, 1.0, 0.0, 4.0)
    assert car.speed > 12.0
    speeds = []
    for _ in range(30 * 5):
        physics.step(car, spec, -1.0, 0.0, DT)
        speeds.append(car.speed)
        if car.speed <= 0.0:
            break
    assert car.speed == 0.0 and min(speeds) >= 0.0  # braking never flips the direction
    _drive(car, spec, -1.0, 0.0, 3.0)
    assert car.speed < -2.0 and car.x > 0.0  # now reversing
    x_before = car.x
    _drive(car, spec, -1.0, 0.0, 1.0)
    assert car.x < x_before


def test_steering_right_turns_right_forward_and_backward() -> None:
    for name, spec in physics.CARS.items():
        car = physics.CarState(heading=0.0)
        _drive(car, spec, 0.4, 0.0, 1.5)
        _drive(car, spec, 0.3, 1.0, 1.0)
        assert car.heading < -0.2, name  # clockwise = to the right
        assert car.y < 0.0, name
        car = physics.CarState(heading=0.0)
        _drive(car, spec, -0.6, -1.0, 2.0)  # reversing with left lock: the nose swings right
        assert car.speed < 0 and car.heading < -0.1, name


def test_car_types_differ() -> None:
    top = {}
    for name, spec in physics.CARS.items():
        car = physics.CarState()
        _drive(car, spec, 1.0, 0.0, 5.0)
        top[name] = car.speed
    assert top["sports"] > top["sedan"] > top["truck"]


def test_crash_stops_the_car_and_it_gets_stuck(game: SimGame) -> None:
    game.reset(Environment(map_seed=4, traffic_density=0.0))
    obs_ = game.world.obstacles
    # A building whose +x face has 20 m of open ground in front of it (a street).
    for b in np.flatnonzero((obs_.kind == BUILDING) & (np.abs(obs_.ang) < 1e-9)):
        free = [obs_.push_out(np.full(3, obs_.x[b] + obs_.hl[b] + d), np.full(3, obs_.y[b]), 1.5)[2] for d in (4.0, 8.0, 14.0, 20.0)]
        if not any(free):
            break
    b = int(b)
    game.car.x = float(obs_.x[b] + obs_.hl[b] + 8.0)  # 8 m in front of that face, facing it
    game.car.y = float(obs_.y[b])
    game.car.heading = math.pi
    game.car.speed = 0.0
    crashed, stuck = False, False
    for _ in range(30 * 8):
        obs = game.step(Controls(1.0, 0.0))
        crashed |= obs.collision
        stuck |= obs.info["stuck"]
    assert crashed and obs.collisions >= 1
    assert abs(obs.speed) < 0.5 and obs.info["contact"] and stuck
    assert game.car.x > obs_.x[b] + obs_.hl[b]  # it did not drive through
    for _ in range(30 * 2):
        obs = game.step(Controls(-1.0, 0.0))
    assert obs.speed < -1.0 and not obs.info["contact"] and not obs.info["stuck"]
    assert obs.collisions == 1  # scraping along is one crash, not one per tick


def test_respawn_lands_on_a_road(game: SimGame) -> None:
    game.reset(Environment(map_seed=6, episode_seed=1, traffic_density=1.0))
    for _ in range(8):
        t0 = game.step().game_time
        obs = game.respawn()
        assert obs.info["on_road"] and abs(obs.lane_offset or 0.0) < 0.6
        assert obs.speed == 0.0 and obs.game_time > t0 and not obs.info["contact"]
        nearest = np.min(np.hypot(game.traffic.x - obs.position[0], game.traffic.y - obs.position[1]))
        assert nearest > 10.0


def _run(env: Environment, controls: list[Controls | None]) -> list[np.ndarray]:
    g = SimGame(cinematic_size=(160, 90))
    frames = [g.reset(env).frame]
    for c in controls:
        frames.append(g.step(c).frame)
    frames.append(g.cinematic())
    frames.append(g.respawn().frame)
    return frames


def test_deterministic() -> None:
    env = Environment(map_seed=8, episode_seed=5, weather="rain", time_of_day=19.0, traffic_density=0.8)
    controls: list[Controls | None] = [None] * 60 + [Controls(0.5, 0.3)] * 30 + [None] * 30
    a, b = _run(env, controls), _run(env, controls)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = _run(Environment(map_seed=8, episode_seed=6, weather="rain", time_of_day=19.0, traffic_density=0.8), controls)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_each_weather_and_night_render_differently(game: SimGame) -> None:
    means = {}
    frames = {}
    for weather, hours in (("clear", 12.0), ("overcast", 12.0), ("rain", 12.0), ("fog", 12.0), ("clear", 23.0)):
        obs = game.reset(Environment(map_seed=9, episode_seed=1, weather=weather, time_of_day=hours))
        frames[(weather, hours)] = obs.frame.astype(np.float32)
        means[(weather, hours)] = obs.frame.reshape(-1, 3).mean(axis=0)
    keys = list(frames)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert np.abs(frames[a] - frames[b]).mean() > 4.0, (a, b)
    assert means[("clear", 23.0)].mean() < 0.5 * means[("clear", 12.0)].mean()  # night is dark
    sky = {k: f[:20].mean() for k, f in frames.items()}
    assert sky[("fog", 12.0)] > sky[("rain", 12.0)]  # fog is bright grey, rain dark


def test_purpose_points_to_the_target(game: SimGame) -> None:
    game.reset(Environment(map_seed=12, episode_seed=3, traffic_density=0.0))
    tx, ty = game.route.target
    bearing = math.atan2(ty - game.car.y, tx - game.car.x)
    for turn, expected in ((-math.pi / 2, math.pi / 2), (math.pi / 2, -math.pi / 2), (0.0, 0.0)):
        game.car.heading = bearing + turn  # target to the left, right, straight ahead
        obs = game.step(Controls(0.0, 0.0))
        assert obs.purpose[1] == pytest.approx(expected, abs=0.05)
        assert obs.purpose[0] == pytest.approx(math.hypot(tx - game.car.x, ty - game.car.y), abs=0.5)


def test_minimap_in_its_corner() -> None:
    env = Environment(map_seed=13, episode_seed=1)
    on, off = SimGame(), SimGame(minimap=False)
    a, b = on.reset(env).frame, off.reset(env).frame
    x, y, w, h = on.minimap_rect
    assert (x, y, w, h) == minimap_rect(160, 120) and x + w <= 160 and y + h <= 120 and x < 20 and y > 60
    diff = np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 0
    assert diff[y : y + h, x : x + w].mean() > 0.5
    outside = diff.copy()
    outside[y : y + h, x : x + w] = False
    assert not outside.any()


@pytest.mark.parametrize("seed", [0, -1, 2**40 + 7, 9001, 9005])
def test_any_seed_makes_a_valid_world(seed: int) -> None:
    game = SimGame()
    obs = game.reset(Environment(map_seed=seed, episode_seed=seed))
    assert obs.info["on_road"]
    for _ in range(90):
        obs = game.step()
    assert obs.odometer > 5.0 and obs.info["on_road"]
