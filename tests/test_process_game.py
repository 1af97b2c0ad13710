"""A game backend in a child process: the same observations as in-process, frames through
shared memory that is released, a killed child restarted, errors raised as their kind."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import fields

import numpy as np
import pytest
import torch

from pipeline.collect.context import ContextBuilder
from pipeline.errors import ConfigError, GameError
from pipeline.games.base import Controls, Environment, Observation, load_game
from pipeline.games.process import ProcessGame
from pipeline.games.sim import SimGame
from pipeline.play.player import Player
from pipeline.play.unstuck import StuckDetector
from pipeline.wire.schema import ContextSpec

OPTIONS = {"hood_size": (96, 64), "cinematic_size": (128, 72), "realtime": False}
ENV = Environment(map_seed=8, episode_seed=5, weather="rain", time_of_day=19.0, traffic_density=0.8)
DRIVE: list[Controls | None] = [None] * 20 + [Controls(0.6, -0.4)] * 15 + [None] * 5


def _shm_blocks() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def _assert_same(a: Observation, b: Observation) -> None:
    for f in fields(Observation):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        elif f.name == "info":
            assert x.keys() == y.keys()
            for key in x:
                want = list(x[key]) if isinstance(x[key], tuple) else x[key]
                assert want == y[key], key
        else:
            assert x == y, f.name


def test_child_process_gives_the_same_observations_as_in_process() -> None:
    before = _shm_blocks()
    local, remote = SimGame(**OPTIONS), load_game("sim", own_process=True, **OPTIONS)
    try:
        assert isinstance(remote, ProcessGame) and remote.fps == local.fps
        _assert_same(local.reset(ENV), remote.reset(ENV))
        frames = []
        for controls in DRIVE:
            a, b = local.step(controls), remote.step(controls)
            _assert_same(a, b)
            frames.append(b.frame)
        assert not np.array_equal(frames[0], frames[-1])  # it moved: the comparison saw real frames
        assert all(f.flags.owndata for f in frames)  # private copies, not views the child overwrites
        assert np.array_equal(local.cinematic(), remote.cinematic())
        _assert_same(local.respawn(), remote.respawn())
        assert _shm_blocks() - before  # frames did travel through shared memory
    finally:
        remote.close()
        local.close()
    assert _shm_blocks() - before == set()


def test_killed_child_is_restarted_with_its_episode_reset() -> None:
    game = ProcessGame("sim", **OPTIONS)
    try:
        first = game.reset(ENV)
        for _ in range(10):
            game.step(None)
        os.kill(game._proc.pid, signal.SIGKILL)
        with pytest.raises(GameError, match="died during step"):
            game.step(None)
        assert game.restarts == 1
        after = game.step(None)  # the new child was reset to ENV: one tick into a fresh episode
        assert after.game_time == pytest.approx(first.game_time + 1 / game.fps, abs=1e-5)
    finally:
        game.close()


def test_errors_keep_their_kind() -> None:
    game = ProcessGame("sim", **OPTIONS)
    try:
        with pytest.raises(GameError, match="before reset"):
            game.step(Controls())
        game.reset(ENV)
        assert game.step(Controls()).frame.shape == (64, 96, 3)  # the child survived the error
    finally:
        game.close()
    with pytest.raises(ConfigError, match="unknown"):
        ProcessGame("sim", no_such_option=1, **OPTIONS)


class Steer(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_player_drives_a_game_in_its_own_process_overlapped() -> None:
    game = ProcessGame("sim", **OPTIONS)
    calls: list[int] = []

    def predict(_model: torch.nn.Module, _ctx: dict[str, np.ndarray]) -> tuple[dict[str, list[float]], Controls]:
        calls.append(1)
        return {}, Controls(0.5, 0.0)

    context = ContextBuilder(ContextSpec(30.0, 1, 0.1, 0, 0.1, 0.0))
    player = Player(game, Steer(), context, StuckDetector(0.5, 5.0, 2.0), predict, watcher=None,
                    realtime=False, overlap=True)
    try:
        stats = player.run(ENV, threading.Event(), max_steps=60)
    finally:
        game.close()
    assert stats.steps == 60 and len(calls) == 60
    assert game.restarts == 0
    assert context.context(0)["frames"].std() > 0  # frames from the child reached the model's context


def test_frames_that_grow_get_a_new_block_and_the_old_one_is_released() -> None:
    before = _shm_blocks()
    game = ProcessGame("tests.growing_game:GrowingGame")
    try:
        frames = [game.reset(Environment()).frame] + [game.step().frame for _ in range(4)]
        assert [f.shape[0] for f in frames] == [8, 16, 32, 64, 128]
        assert all(f.min() == f.max() == f.shape[0] for f in frames)  # each from the newest block
        assert len(_shm_blocks() - before) == 1  # one block per slot alive, the outgrown ones unlinked
    finally:
        game.close()
    assert _shm_blocks() - before == set()
