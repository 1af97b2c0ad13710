"""Evaluator: closed-loop driving through the player's loop, held-out seeds only, weights refused,
the `best` pointer and players that follow it."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from click.testing import CliRunner

from pipeline.errors import ConfigError, WeightsError
from pipeline.evaluate.closed_loop import BASELINE, NPC, EvalSettings, Evaluator, compare, summarize
from pipeline.evaluate.scoreboard import (
    _MOVE_BEST_LUA,
    best_version,
    claim_against_best,
    move_best,
    record_scores,
)
from pipeline.games.base import Controls, Environment, Observation
from pipeline.games.sim import SimGame
from pipeline.models import build_model
from pipeline.models.loading import build_model_from, read_weights_file
from pipeline.observe.status import snapshot
from pipeline.play.player import WeightsWatcher
from pipeline.serve.server import Server, sample_environment
from pipeline.wire.keys import Keys
from pipeline.wire.weights import WeightsStore, to_blob
from tests.factories import tiny_config

WALL_M = 30.0
LANE_M = 0.25


class LineGame:
    """A straight road with a wall at 30 m; 8 m/s at full throttle; the NPC drives flat out.

    fps = 8 keeps every game time exact in binary, so the Stuck detector fires on a known tick.
    """

    fps = 8.0

    def __init__(self) -> None:
        self.envs: list[Environment] = []
        self.controls_seen: list[Controls | None] = []

    def _obs(self, controls: Controls, collision: bool = False) -> Observation:
        return Observation(frame=np.zeros((24, 32, 3), np.uint8), speed=0.0,
                           purpose=np.array([100.0 - self.x, 0.0], np.float32), controls=controls,
                           game_time=self.t, position=(self.x, 0.0), odometer=self.odo, collision=collision,
                           collisions=self.collisions, lane_offset=LANE_M, info={"target": (100.0, 0.0)})

    def reset(self, env: Environment) -> Observation:
        self.envs.append(env)
        self.x = self.odo = self.t = 0.0
        self.collisions = 0
        return self._obs(Controls())

    def step(self, controls: Controls | None = None) -> Observation:
        self.controls_seen.append(controls)
        throttle = 1.0 if controls is None else controls.acceleration_braking
        nx = min(self.x + 8.0 * throttle / self.fps, WALL_M)
        collision = self.x < WALL_M <= nx
        self.collisions += int(collision)
        self.odo += nx - self.x
        self.x = nx
        self.t += 1 / self.fps
        return self._obs(Controls(throttle, 0.0), collision)

    def respawn(self) -> Observation:
        self.x = 0.0
        self.t += 0.5
        return self._obs(Controls())

    def cinematic(self) -> np.ndarray:
        return np.zeros((4, 4, 3), np.uint8)

    def close(self) -> None:
        pass


def line_settings(**evaluator: object) -> EvalSettings:
    cfg = tiny_config(game={"fps": 8.0}, collection={"held_out_seeds": [9001, 9002, 9003]},
                      evaluator={"episode_s": 10.0, "environments": ["day", "night"], "episodes_per_environment": 1,
                                 **evaluator},
                      unstuck={"min_displacement_m": 1.0, "window_s": 1.0, "grace_s": 0.0})
    return EvalSettings.from_config(cfg)


def test_npc_and_baseline_driven_by_the_player_loop_exact() -> None:
    game = LineGame()
    ev = Evaluator(game, line_settings())
    npc = summarize(ev.run(NPC))
    assert all(c is None for c in game.controls_seen)  # the NPC drives: step(None)
    m = npc["metrics"]
    # per episode (80 steps): wall at step 30, Stuck 1 s later (step 38), respawn, wall at step 68,
    # respawn at step 76, then 4 m: 64 m, 2 crashes each followed by its Unstuck = 2 incidents
    assert m["episodes"] == 2 and m["steps"] == 160 and m["duration_s"] == 20.0
    assert m["distance_m"] == 128.0 and m["collisions"] == 4 and m["unstucks"] == 4 and m["incidents"] == 4
    assert m["mean_distance_between_incidents_m"] == pytest.approx(128.0 / 6)
    assert m["mean_abs_lane_offset_m"] == LANE_M and m["progress_m"] == pytest.approx(128.0)
    game.controls_seen.clear()
    base = compare(summarize(ev.run(BASELINE)), npc)
    assert {c.acceleration_braking for c in game.controls_seen} == {0.5}
    b = base["metrics"]
    # half throttle: wall at step 60; the window is within 1 m of the wall from step 59 (29.5 m),
    # so Unstuck after step 67, then 13 x 0.5 m: 36.5 m and one incident per episode
    assert b["distance_m"] == 73.0 and b["incidents"] == 2 and b["unstucks"] == 2
    assert base["ratio_to_npc"] == pytest.approx((73.0 / 4) / (128.0 / 6))
    assert base["environments"]["day"]["ratio_to_npc"] == pytest.approx((36.5 / 2) / (64.0 / 3))


def test_evaluator_drives_only_held_out_seeds() -> None:
    settings = line_settings(episodes_per_environment=4, environments=["day", "night", "rain", "traffic"])
    plan = settings.plan()
    assert len(plan) == 16 and {p.env.map_seed for p in plan} == {9001, 9002, 9003}
    game = LineGame()
    Evaluator(game, EvalSettings(**{**settings.__dict__, "episode_s": 0.5})).run(BASELINE)
    assert [e.map_seed for e in game.envs] == [p.env.map_seed for p in plan]
    assert {e.map_seed for e in game.envs} <= set(settings.held_out_seeds)
    night = [p.env for p in plan if p.name == "night"][0]
    rain = [p.env for p in plan if p.name == "rain"][0]
    assert night.time_of_day >= 21 and rain.weather == "rain"
    assert [p.env for p in settings.plan()] == [p.env for p in plan]  # reproducible
    with pytest.raises(ConfigError, match="evaluator.environments"):
        line_settings(environments=["day", "mars"])


def test_held_out_seeds_never_reach_collection_jobs(r: redis.Redis, keys: Keys) -> None:
    cfg = tiny_config(collection={"map_seeds": [9000, 9010], "held_out_seeds": [8999, 9011]})
    server = Server(r, keys, cfg, seed=3)
    server.setup()
    seeds = {server.next_episode().environment.map_seed for _ in range(200)}
    assert seeds <= set(range(9000, 9011)) and not seeds & {8999, 9011}
    rng = random.Random(1)
    caps = SimGame.capabilities
    assert not {sample_environment(cfg.collection, rng, caps).map_seed for _ in range(500)} & {8999, 9011}
    with pytest.raises(ConfigError, match="held_out_seeds"):
        tiny_config(collection={"map_seeds": [1, 100], "held_out_seeds": [50]})


def _model_blob(seed: int = 0) -> tuple[bytes, dict[str, torch.Tensor]]:
    cfg = tiny_config(model={"width": 8, "dense": 32, "head": [16]})
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return to_blob(state, {"model": cfg.run.name, "batches": "5"}), state


def test_corrupt_and_forged_weights_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(model={"width": 8, "dense": 32, "head": [16]})
    blob, state = _model_blob()
    good = tmp_path / "good.safetensors"
    good.write_bytes(blob)
    tensors, meta = read_weights_file(good, hashlib.sha256(blob).hexdigest())
    assert meta["model"] == cfg.run.name and build_model_from(cfg, tensors) is not None
    cases = {
        "pickle.pt": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01w\x94K\x01s.",
        "truncated.safetensors": blob[:-100],
        "forged_header.safetensors": (10**12).to_bytes(8, "little") + blob[8:],
        "empty.safetensors": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WeightsError, match="safetensors"):
            read_weights_file(path)
    with pytest.raises(WeightsError, match="sha256"):
        read_weights_file(good, "0" * 64)
    other = to_blob({"backbone.weight": torch.zeros(3)})
    (tmp_path / "other.safetensors").write_bytes(other)
    with pytest.raises(WeightsError, match="do not fit"):
        build_model_from(cfg, read_weights_file(tmp_path / "other.safetensors")[0])
    state["trunk.0.weight"] = state["trunk.0.weight"][:, :-1]  # right names, wrong shape
    (tmp_path / "shape.safetensors").write_bytes(to_blob(state))
    with pytest.raises(WeightsError, match="do not fit"):
        build_model_from(cfg, read_weights_file(tmp_path / "shape.safetensors")[0])
    from workers.evaluate import cli

    result = CliRunner().invoke(cli, ["--weights", str(tmp_path / "pickle.pt"), "--json"])
    assert result.exit_code != 0 and "only safetensors" in result.output


def _record(version: int, ratio: float | None) -> dict[str, object]:
    return {"version": version, "batches": version * 50, "ratio_to_npc": ratio,
            "metrics": {"incidents_per_km": 1.0, "mean_distance_between_incidents_m": 100.0}}


def test_best_pointer_moves_only_to_better_and_players_follow_it(r: redis.Redis, keys: Keys) -> None:
    store = WeightsStore(r, keys, keep_versions=2)
    blobs = {}
    infos = {}
    for v in range(1, 4):
        blob, state = _model_blob(seed=v)
        infos[v] = store.publish(state, "charles_small_cnn", batches=50 * v)
        blobs[v] = r.hget(keys.weights_version_blob(v), "blob")
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.weights_channel)
    assert move_best(r, keys, infos[2], blobs[2], _record(2, 0.6))
    assert not move_best(r, keys, infos[3], blobs[3], _record(3, 0.5))  # worse: stays on 2
    assert not move_best(r, keys, infos[3], blobs[3], _record(3, 0.6))  # equal is not better
    assert not move_best(r, keys, infos[1], blobs[1], _record(1, None))
    assert best_version(r, keys) == 2
    note = None
    for _ in range(50):
        note = pubsub.get_message(timeout=0.1) or note
        if note:
            break
    assert note is not None and json.loads(note["data"]) == {**json.loads(infos[2].notification()), "best": True}
    # v2 falls out of the kept versions; the best pointer keeps its own copy
    for _ in range(3):
        store.publish(_model_blob(seed=9)[1], "charles_small_cnn", batches=500)
    assert r.exists(keys.weights_version_blob(2)) == 0
    info, tensors = store.fetch(2)
    assert info.version == 2 and info.sha256 == infos[2].sha256
    best_info, _ = store.fetch_best()  # type: ignore[misc]
    assert best_info.version == 2
    # a player that follows `best` prepares v2, one that follows `latest` the newest
    cfg = tiny_config(model={"width": 8, "dense": 32, "head": [16]})

    def build(t: dict[str, torch.Tensor]) -> torch.nn.Module:
        return build_model_from(cfg, t)

    stop = threading.Event()
    best = WeightsWatcher(r, keys, build, "charles_small_cnn", "best", stop)
    assert best.prepare_latest() and best.take().info.version == 2  # type: ignore[union-attr]
    latest = WeightsWatcher(r, keys, build, "charles_small_cnn", "latest", stop)
    assert latest.prepare_latest() and latest.take().info.version == 6  # type: ignore[union-attr]
    # a better version moves the pointer; followers of best pick it up
    assert move_best(r, keys, infos[3], blobs[3], _record(3, 0.9))
    assert best.prepare_latest() and best.take().info.version == 3  # type: ignore[union-attr]
    # a version of another model replaces the pointer (scores of different models do not compare)
    assert move_best(r, keys, store.publish(_model_blob()[1], "other", 1), blobs[1], _record(7, 0.1))


def test_best_moves_only_beyond_the_noise(r: redis.Redis, keys: Keys) -> None:
    """A candidate's lower bound must beat the best's point estimate (docs/evaluation.md)."""
    store = WeightsStore(r, keys)
    infos, blobs = {}, {}
    for v in range(1, 5):
        infos[v] = store.publish(_model_blob(seed=v)[1], "charles_small_cnn", batches=50 * v)
        blobs[v] = r.hget(keys.weights_version_blob(v), "blob")

    def rec(version: int, ratio: float, low: float, high: float) -> dict[str, object]:
        return {**_record(version, ratio), "intervals": {"ratio_to_npc": [low, high], "level": 0.9}}

    assert move_best(r, keys, infos[1], blobs[1], rec(1, 0.6, 0.4, 0.75))  # the first scored version
    assert not move_best(r, keys, infos[2], blobs[2], rec(2, 0.8, 0.55, 0.95))  # higher, but within the noise
    assert not move_best(r, keys, infos[3], blobs[3], rec(3, 0.75, 0.6, 0.9))  # lower bound = best: not beyond
    assert best_version(r, keys) == 1
    assert move_best(r, keys, infos[4], blobs[4], rec(4, 0.7, 0.61, 0.8))  # lower bound above 0.6
    assert best_version(r, keys) == 4
    assert r.hget(keys.weights_best, "score") == b"0.7" and r.hget(keys.weights_best, "lower") == b"0.61"


def test_best_compares_episode_for_episode_on_the_same_plan(r: redis.Redis, keys: Keys) -> None:
    """Against a best that drove the same starts, a version better on those starts moves it
    although its own interval reaches below the best's score; one better on some and worse on
    others does not (docs/evaluation.md "(af)")."""
    store = WeightsStore(r, keys)
    infos, blobs = {}, {}
    for v in range(1, 5):
        infos[v] = store.publish(_model_blob(seed=v)[1], "charles_small_cnn", batches=50 * v)
        blobs[v] = r.hget(keys.weights_version_blob(v), "blob")
    starts = [("day", 9001), ("night", 9002), ("rain", 9003), ("traffic", 9004)] * 2

    def rec(version: int, ratio: float, low: float, distances: list[float], incidents: list[int]) -> dict:
        episodes = [{"environment": e, "map_seed": m, "distance_m": d, "incidents": i, "steps": 100,
                     "lane_sum": 50.0, "lane_n": 100} for (e, m), d, i in zip(starts, distances, incidents, strict=True)]
        return {**_record(version, ratio), "reference": "plan", "episodes": episodes,
                "intervals": {"ratio_to_npc": [low, ratio + 0.2], "level": 0.9, "resamples": 2000}}

    hard = [0, 3, 1, 4, 0, 2, 1, 3]  # the starts' incidents: most of any one interval's width
    assert move_best(r, keys, infos[1], blobs[1], rec(1, 0.8, 0.6, [500.0] * 8, hard))
    # 25% farther on every start with the same incidents: better beyond the noise, though its own
    # lower bound (0.8) does not beat the best's 0.8
    assert move_best(r, keys, infos[2], blobs[2], rec(2, 1.0, 0.8, [625.0] * 8, hard))
    assert best_version(r, keys) == 2
    # about as good: one incident fewer on two starts and more on two others
    mixed = [0, 2, 2, 4, 0, 1, 2, 3]
    assert not move_best(r, keys, infos[3], blobs[3], rec(3, 1.05, 0.85, [625.0] * 8, mixed))
    assert best_version(r, keys) == 2
    # scored on another plan: its own lower bound decides, and 0.9 does not beat 1.0
    other = {**rec(4, 1.3, 0.9, [800.0] * 8, hard), "reference": "another plan"}
    assert claim_against_best(r, keys, other, "charles_small_cnn") == (0.9, "")
    assert not move_best(r, keys, infos[4], blobs[4], other)
    # the compare-and-set refuses a claim computed against a best that has moved since
    claim, against = claim_against_best(r, keys, rec(4, 1.3, 0.9, [800.0] * 8, hard), "charles_small_cnn")
    assert against == "2" and claim == pytest.approx(1.0 * 800 / 625)
    r.hset(keys.weights_best, "version", "3")
    moved = r.register_script(_MOVE_BEST_LUA)(keys=[keys.weights_best],
                                              args=[repr(claim), "charles_small_cnn", "ratio_to_npc", against,
                                                    "version", 4])
    assert moved == -1 and best_version(r, keys) == 3


def test_status_shows_evaluation(r: redis.Redis, keys: Keys) -> None:
    record_scores(r, keys, 4, _record(4, 0.7))
    blob, state = _model_blob()
    info = WeightsStore(r, keys).publish(state, "charles_small_cnn", 4)
    move_best(r, keys, info, r.hget(keys.weights_latest, "blob"), _record(info.version, 0.7))
    evaluation = snapshot(r, keys)["evaluation"]
    assert evaluation["versions"]["4"]["ratio_to_npc"] == 0.7
    assert evaluation["best"] == info.version


def test_evaluate_command_scores_a_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from workers.evaluate import cli

    config = tmp_path / "tiny.toml"
    config.write_text(
        '[game]\nhood_width = 32\nhood_height = 24\ncinematic_width = 32\ncinematic_height = 18\n'
        '[model]\nwidth = 8\ndense = 32\nhead = [16]\n'
        '[evaluator]\nepisode_s = 1.0\nenvironments = ["day", "rain"]\nepisodes_per_environment = 1\n'
    )
    blob, _ = _model_blob()
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(blob)
    monkeypatch.chdir(tmp_path)  # the reference cache goes to ./var/evaluation
    args = ["--weights", str(weights), "--config", str(config), "--seconds", "1", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    model = record["policies"]["model"]
    assert record["plan"]["environments"] == ["day", "rain"] and model["metrics"]["episodes"] == 2
    assert model["metrics"]["duration_s"] == 2.0 and "ratio_to_npc" in model
    assert record["weights"]["trained_batches"] == 5 and record["weights"]["model"] == "charles_small_cnn"
    assert set(record["plan"]["held_out_seeds"]) == {9001, 9002, 9003, 9004, 9005}
    assert list((tmp_path / "var" / "evaluation").glob("reference-*.json"))
    bad = CliRunner().invoke(cli, [*args[:2], "--config", str(config), "--sha256", "0" * 64])
    assert bad.exit_code != 0 and "sha256" in bad.output


def _tiny_evaluation(tmp_path: Path) -> list[str]:
    """`charles evaluate` arguments for a tiny model on two 1-second episodes."""
    config = tmp_path / "tiny.toml"
    config.write_text(
        '[game]\nhood_width = 32\nhood_height = 24\ncinematic_width = 32\ncinematic_height = 18\n'
        '[model]\nwidth = 8\ndense = 32\nhead = [16]\n'
        '[evaluator]\nepisode_s = 1.0\nprocesses = 1\nenvironments = ["day", "rain"]\nepisodes_per_environment = 1\n'
    )
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(_model_blob()[0])
    return ["--weights", str(weights), "--config", str(config), "--seconds", "1", "--json"]


def _evaluate_process(tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "evaluate", *args], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "CHARLES_ENV_FILE": str(tmp_path / "no.env"), "OMP_NUM_THREADS": "1",
                               "CHARLES_LOG_JSON": "1", **env})


def test_evaluate_shows_progress_with_and_without_a_terminal(tmp_path: Path) -> None:
    """Issue 18 #6: `charles evaluate` ran silent until the end (no bar; with --json no line at all)."""
    args = _tiny_evaluation(tmp_path)
    piped = _evaluate_process(tmp_path, args, CHARLES_PROGRESS="0")
    assert piped.returncode == 0, piped.stderr
    events = [json.loads(line) for line in piped.stderr.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "evaluation_progress"]
    assert [e["done"] for e in progress] == [1, 2, 3, 4, 5, 6]  # NPC, baseline, model: 2 episodes each
    assert {e["total"] for e in progress} == {6} and progress[-1]["eta_s"] == 0.0
    assert progress[0]["what"] == "evaluating: npc" and progress[-1]["what"] == "evaluating: model"
    json.loads(piped.stdout)  # stdout is the one JSON object, nothing else
    cached = _evaluate_process(tmp_path, args, CHARLES_PROGRESS="0")  # the references come from the cache now
    assert [json.loads(line)["total"] for line in cached.stderr.splitlines()
            if '"evaluation_progress"' in line] == [2, 2]
    drawn = _evaluate_process(tmp_path, args, CHARLES_PROGRESS="1")
    assert drawn.returncode == 0, drawn.stderr
    assert "evaluating" in drawn.stderr and "2/2" in drawn.stderr and "evaluation_episode" not in drawn.stderr
    json.loads(drawn.stdout)


def test_evaluate_json_has_one_shape_per_policy_and_says_when_it_misleads(tmp_path: Path) -> None:
    """Issue 18 #7: the model had metrics + a top-level ratio, the NPC bare metrics, the baseline
    {metrics, ratio}; only the model had per-environment figures; `batches` had no label; and 1 s
    episodes, where every distance is censored, gave no warning."""
    result = _evaluate_process(tmp_path, _tiny_evaluation(tmp_path), CHARLES_PROGRESS="0")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    policies = record["policies"]
    assert list(policies) == ["model", "npc", "baseline"]
    shapes = {name: sorted(p) for name, p in policies.items()}
    assert shapes["model"] == shapes["npc"] == shapes["baseline"], shapes
    for p in policies.values():
        assert set(p["environments"]) == {"day", "rain"}
        assert all("ratio_to_npc" in m for m in p["environments"].values())
        assert sorted(p["metrics"]) == sorted(policies["model"]["metrics"])
    assert policies["npc"]["ratio_to_npc"] == 1.0
    assert record["weights"]["trained_batches"] == 5 and "batches" not in record
    assert any("censored" in w and "--seconds" in w for w in record["warnings"]), record["warnings"]
    assert '"evaluation_warning"' in result.stderr


def test_a_baseline_that_beats_the_model_is_a_warning() -> None:
    """Issue 18 #7: the straight-ahead baseline (0.97) beat the shipped model (0.87) without a word."""
    from pipeline.evaluate.closed_loop import report_warnings

    def policy(ratio: float | None, censored: bool = False) -> dict:
        return {"metrics": {"censored": censored}, "ratio_to_npc": ratio}

    warned = report_warnings({"model": policy(0.87), "npc": policy(1.0), "baseline": policy(0.97)}, 60.0)
    assert len(warned) == 1 and "baseline (0.97)" in warned[0] and "model (0.87)" in warned[0]
    assert report_warnings({"model": policy(1.1), "npc": policy(1.0), "baseline": policy(0.3)}, 60.0) == []
    assert "drove nowhere" in report_warnings({"model": policy(None), "npc": policy(None),
                                               "baseline": policy(None)}, 60.0)[0]


def test_a_plugins_fingerprint_covers_its_whole_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: cached NPC scores were keyed on the backend's one file, so a change elsewhere
    in a plug-in (its physics, its expert) kept stale references."""
    from pipeline.evaluate.closed_loop import backend_fingerprint

    package = tmp_path / "fingerprint_plugin"
    (package / "physics").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "world.py").write_text("from fingerprint_plugin.expert import steer\nclass Game: ...\n")
    (package / "expert.py").write_text("def steer(x): return -x\n")
    (package / "physics" / "__init__.py").write_text("")
    (package / "physics" / "car.py").write_text("GRIP = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    backend = "fingerprint_plugin.world:Game"
    seen = {backend_fingerprint(backend)}
    for changed, text in (("expert.py", "def steer(x): return -0.5 * x\n"), ("physics/car.py", "GRIP = 0.9\n"),
                          ("world.py", "from fingerprint_plugin.expert import steer\nclass Game: pass\n")):
        (package / changed).write_text(text)
        seen.add(backend_fingerprint(backend))
    assert len(seen) == 4 and "unknown" not in seen
    assert backend_fingerprint(backend) == backend_fingerprint(backend)  # nothing but the sources counts


def test_a_game_with_its_own_score_is_scored_and_ranked_by_it(r: redis.Redis, keys: Keys,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: a backend's own per-episode score is reported beside ratio_to_npc, with its
    interval, and `[evaluator] rank_by = "game_score"` makes `best` follow it."""
    from pipeline.evaluate.closed_loop import Policy, policy_report, reference_scores, score_policy
    from pipeline.evaluate.report import print_report
    from pipeline.games.options import GameCache

    lane = "tests.lane_game:LaneGame"
    cfg = tiny_config(game={"backend": lane}, collection={"model_drives": 0.0},
                      evaluator={"episode_s": 4.0, "environments": ["day"], "episodes_per_environment": 3,
                                 "rank_by": "game_score"})
    settings = EvalSettings.from_config(cfg)
    games = GameCache()
    evaluator = Evaluator(games.get(cfg), settings)
    refs = reference_scores(evaluator)
    drifting = Policy("model", predict=lambda _m, _c: ({}, Controls(0.5, 0.6)))
    scores = score_policy(evaluator, drifting, refs)
    games.close()
    npc, base = refs["npc"]["metrics"]["game_score"], refs["baseline"]["game_score"]
    assert 0.0 <= scores["game_score"] < npc <= 4.0 and base is not None
    assert scores["game_score"] == scores["metrics"]["game_score"] == scores["environments"]["day"]["game_score"]
    low, high = scores["intervals"]["game_score"]
    assert low <= scores["game_score"] <= high
    report = policy_report(scores, refs)
    assert report["npc"]["game_score"] == npc
    monkeypatch.setenv("COLUMNS", "200")  # one line per row
    print_report({"policies": report, "warnings": []})
    assert "game score" in capsys.readouterr().out
    # the sim has no score of its own: ratio_to_npc only
    assert summarize([])["metrics"]["game_score"] is None
    with pytest.raises(ConfigError, match=r"rank_by = 'game_score' needs a backend with its own score"):
        EvalSettings.from_config(tiny_config(evaluator={"rank_by": "game_score"}))

    store = WeightsStore(r, keys)
    infos = {v: store.publish(_model_blob(seed=v)[1], "charles_small_cnn", batches=50 * v) for v in (1, 2, 3)}
    blobs = {v: r.hget(keys.weights_version_blob(v), "blob") for v in infos}

    def rec(version: int, game: float, low: float, ratio: float) -> dict[str, object]:
        return {**_record(version, ratio), "game_score": game,
                "intervals": {"game_score": [low, game + 1], "ratio_to_npc": [ratio, ratio]}}

    assert move_best(r, keys, infos[1], blobs[1], rec(1, 2.0, 1.5, 0.9), "game_score")
    # a better ratio_to_npc does not move a best ranked by the game's score ...
    assert not move_best(r, keys, infos[2], blobs[2], rec(2, 1.0, 0.5, 1.5), "game_score")
    # ... a game score beyond the noise does
    assert move_best(r, keys, infos[3], blobs[3], rec(3, 3.0, 2.5, 0.5), "game_score")
    assert best_version(r, keys) == 3 and r.hget(keys.weights_best, "rank_by") == b"game_score"
    assert r.hget(keys.weights_best, "score") == b"3.0"


def test_evaluation_environments_follow_what_the_backend_declares() -> None:
    """Issue 16: the evaluator's environments were simulator scenes with the car hard-coded to
    "sedan" for every game. A backend's own scenarios are used where it declares them; else the
    built-in scenes keep only the fields it varies; the simulator's scenes are unchanged."""
    from pipeline.evaluate.closed_loop import environment
    from pipeline.games.base import Capabilities
    from pipeline.games.sim import SimGame

    for name in ("day", "night", "rain", "traffic"):
        assert environment(name, 9001, 7, SimGame.capabilities) == environment(name, 9001, 7)
    cfg = tiny_config(game={"backend": "tests.lane_game:LaneGame"}, collection={"model_drives": 0.0},
                      evaluator={"environments": ["night", "rain"], "episodes_per_environment": 1})
    plan = EvalSettings.from_config(cfg).plan()
    default = Environment()
    assert [(p.name, p.env.weather, p.env.time_of_day, p.env.traffic_density, p.env.car) for p in plan] == [
        ("night", "clear", default.time_of_day, default.traffic_density, default.car),
        ("rain", "rain", default.time_of_day, default.traffic_density, default.car)]
    karts = Capabilities(environment={"car": ("kart", "truck"), "weather": ("clear",)})
    assert environment("night", 1, 2, karts).car == "kart"
    laps = Capabilities(scenarios={"monaco": {"weather": "rain", "car": "f1"}})
    assert environment("monaco", 1, 2, laps) == Environment(map_seed=1, episode_seed=2, weather="rain", car="f1")
    with pytest.raises(ConfigError, match=r"'day' is not one of the backend's scenarios \['monaco'\]"):
        environment("day", 1, 2, laps)
