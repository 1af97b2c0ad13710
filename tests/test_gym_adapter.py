"""The `gymnasium` backend: a tiny env written here (tests/gym_lane_env.py) and the simulator's
`CharlesSim-v0`, both made through gymnasium's registry, driven as Charles games; DAgger
collection on the tiny env against a real Redis."""

from __future__ import annotations

import random
from typing import Any

import gymnasium
import numpy as np
import pytest
import redis
import torch

from pipeline.collect.episode import Collector
from pipeline.collect.handoff import EpisodeSpec
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.games.base import Controls, Environment, capabilities_of, load_game
from pipeline.models import build_model
from pipeline.serve.server import sample_environment
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.rows import decode_row
from pipeline.wire.weights import WeightsStore
from tests.factories import tiny_config

LANE: dict[str, Any] = {"env_id": "tests.gym_lane_env:Lane-v0", "env_kwargs": {"max_steps": 50},
                        "action": "steer_gas_brake", "frame": "observation", "speed": "info.speed",
                        "expert": "tests.gym_lane_env:expert"}


def test_a_tiny_env_plays_as_a_charles_game() -> None:
    game = load_game("gymnasium", hood_size=(16, 12), cinematic_size=(64, 48), fps=30.0, expert_labels=True, **LANE)
    lane = game.env.unwrapped  # type: ignore[attr-defined]
    obs = game.reset(Environment(episode_seed=5))
    assert obs.frame.shape == (12, 16, 3) and obs.frame.dtype == np.uint8 and obs.info["score"] == 0.0
    obs = game.step(Controls(0.5, -0.25))  # Charles' controls as [steering, gas, brake]
    assert lane.actions[-1] == pytest.approx([-0.25, 0.5, 0.0])
    assert len(obs.info["expert"]) == 2 and obs.controls == Controls(0.5, -0.25)
    game.step(Controls(-0.4, 0.1))
    assert lane.actions[-1] == pytest.approx([0.1, 0.0, 0.4])
    rewards, respawned = 0.0, 0
    for _ in range(60):  # the expert drives (the NPC of collection); the env's episode ends at 50 steps
        before = lane.x
        obs = game.step(None)
        respawned += int(obs.info.get("respawned", False))
        rewards += 1.0 if abs(lane.x) < 0.5 and not obs.info.get("respawned") else 0.0
        assert obs.controls.steering == pytest.approx(float(np.clip(-before, -1, 1)), abs=1e-6)
    assert respawned == 1 and obs.speed > 0 and obs.game_time == pytest.approx(62 / 30)
    assert obs.info["score"] >= rewards > 0  # the rewards summed (the respawn's step counted its reward too)
    assert game.cinematic().shape == (48, 64, 3)
    game.close()

    seen = load_game("gymnasium", hood_size=(16, 12), fps=30.0, **{**LANE, "frame": "render"})
    assert seen.reset(Environment(episode_seed=1)).frame.shape == (12, 16, 3)
    with pytest.raises(ConfigError, match="cannot make 'NoSuchEnv-v9'"):
        load_game("gymnasium", **{**LANE, "env_id": "NoSuchEnv-v9"})
    with pytest.raises(ConfigError, match="unknown option"):
        load_game("gymnasium", **LANE, steer="left")


def test_charles_sim_through_gymnasiums_registry() -> None:
    """CharlesSim-v0 made by gymnasium: the adapter's frames, actions and summed rewards are the
    env's own, step for step."""
    sim = {"env_id": "pipeline.games.sim:CharlesSim-v0", "env_kwargs": {"hood_size": (64, 48), "minimap": False},
           "action": "accel_steer", "frame": "observation.frame", "speed": "observation.speed",
           "expert": "tests.gym_lane_env:sim_expert"}
    game = load_game("gymnasium", hood_size=(64, 48), fps=30.0, **sim)
    direct = gymnasium.make("CharlesSim-v0", hood_size=(64, 48), minimap=False)
    obs = game.reset(Environment(episode_seed=7))
    ref, _ = direct.reset(seed=7)
    assert np.array_equal(obs.frame, ref["frame"])
    total = 0.0
    for _ in range(45):
        obs = game.step(None)
        ref, reward, *_ = direct.step(np.array([obs.controls.acceleration_braking, obs.controls.steering], np.float32))
        total += reward
        assert np.array_equal(obs.frame, ref["frame"]) and obs.speed == pytest.approx(float(ref["speed"][0]))
    assert obs.info["score"] == pytest.approx(total) and obs.speed > 1.0
    game.close()
    direct.close()


def test_dagger_on_a_gymnasium_env(r: redis.Redis, keys: Keys) -> None:
    """Expert labels exist when an expert is named: DAgger is refused without one, and with one
    a collection episode lets the model drive while the expert labels every tick."""
    with pytest.raises(ConfigError, match="needs a backend that gives expert labels"):
        load_config(overrides={"game": {"backend": "gymnasium", "options": {**LANE, "expert": None}},
                               "collection": {"model_drives": 0.5}})
    cfg = tiny_config(game={"backend": "gymnasium", "options": LANE},
                      collection={"model_drives": 1.0, "model_drives_after_version": 1},
                      balancing={"min_bins_filled": 0.0})
    assert capabilities_of("gymnasium", cfg.game.options).expert_labels
    publish_config(r, keys, cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    info = WeightsStore(r, keys).publish(model.state_dict(), cfg.run.name, batches=0)
    collector = Collector(r, keys, "collector-gym-test")
    try:
        env = sample_environment(cfg.collection, random.Random(1), capabilities_of("gymnasium", cfg.game.options))
        summary = collector.run_episode(EpisodeSpec("gym-ep", env, 2.0))
    finally:
        collector.games.close()
    assert summary["model_ticks"] == 60 and summary["model_version"] == info.version
    rows = [decode_row(r.get(k)) for k in r.scan_iter(match=keys.incoming("*", "*", "*"), count=1000)]
    assert rows and all(row["policy_version"] == info.version for row in rows)
    applied = np.array([row["controls"] for row in rows])
    labels = np.array([row["targets"] for row in rows])
    assert np.abs(labels - applied).max() > 0.1  # the expert's commands, not the model's


def test_the_reference_key_follows_the_envs_and_the_experts_code(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The NPC's cached scores are keyed on the env's and the expert's packages too, not only on
    the adapter: editing either drives the references again; editing nothing keeps them."""
    import importlib
    import uuid

    from pipeline.evaluate.closed_loop import backend_fingerprint

    name = f"toy_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "env.py").write_text(
        "import gymnasium\n"
        "from tests.gym_lane_env import LaneEnv\n"
        f"gymnasium.register('{name}/Toy-v0', entry_point='{name}.env:LaneEnv')\n"
    )
    (pkg / "experts.py").write_text("def centre(observation, env):\n    return [0.5, 0.0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    options = {"env_id": f"{name}.env:{name}/Toy-v0", "expert": f"{name}.experts:centre"}
    first = backend_fingerprint("gymnasium", options)
    assert first != "unknown" and backend_fingerprint("gymnasium", options) == first
    assert backend_fingerprint("gymnasium", {"env_id": "CartPole-v1"}) != first

    (pkg / "experts.py").write_text("def centre(observation, env):\n    return [0.4, 0.0]\n")
    second = backend_fingerprint("gymnasium", options)
    assert second != first  # the expert changed
    (pkg / "env.py").write_text((pkg / "env.py").read_text() + "# the track changed\n")
    assert backend_fingerprint("gymnasium", options) not in (first, second)  # the env's package changed
