"""Player: new weights are prepared in the background and swapped in only at an Unstuck."""

from __future__ import annotations

import threading
import time

import numpy as np
import redis
import torch

from pipeline.collect.context import ContextBuilder
from pipeline.errors import GameError
from pipeline.games.base import Controls, Environment, Observation
from pipeline.play.player import Player, WeightsWatcher
from pipeline.play.unstuck import StuckDetector
from pipeline.wire.keys import Keys
from pipeline.wire.schema import ContextSpec
from pipeline.wire.weights import WeightsStore


class WallGame:
    """A one-dimensional road with a wall at 30 m: driving forward always ends stuck."""

    fps = 30.0

    def __init__(self) -> None:
        self.x = 0.0
        self.t = 0.0
        self.respawns = 0

    def _obs(self, controls: Controls) -> Observation:
        return Observation(frame=np.zeros((4, 4, 3), np.uint8), speed=0.0, purpose=np.zeros(2, np.float32),
                           controls=controls, game_time=self.t, position=(self.x, 0.0))

    def reset(self, env: Environment) -> Observation:
        self.x, self.t = 0.0, 0.0
        return self._obs(Controls())

    def step(self, controls: Controls | None = None) -> Observation:
        controls = controls or Controls()
        self.t += 1 / self.fps
        self.x = min(30.0, self.x + 10.0 * controls.acceleration_braking / self.fps)
        return self._obs(controls)

    def respawn(self) -> Observation:
        self.respawns += 1
        self.x = 0.0
        return self._obs(Controls())

    def cinematic(self) -> np.ndarray:
        return np.zeros((4, 4, 3), np.uint8)

    def close(self) -> None:
        pass


class Throttle(torch.nn.Module):
    """A 'model' whose only weight is the throttle it applies, so a swap is visible."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.throttle = torch.nn.Parameter(torch.tensor([value]))


def predict(model: torch.nn.Module, _ctx: dict[str, np.ndarray]) -> tuple[dict[str, list[float]], Controls]:
    value = float(model.throttle.detach())
    return {"acceleration_braking": [value]}, Controls(value, 0.0)


def build(tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = Throttle()
    model.load_state_dict(tensors)
    return model


def make_player(r: redis.Redis, keys: Keys, stop: threading.Event) -> tuple[Player, WallGame, WeightsWatcher]:
    game = WallGame()
    watcher = WeightsWatcher(r, keys, build, "m", "latest", stop)
    player = Player(game, Throttle(1.0), ContextBuilder(ContextSpec(30.0, 1, 0.1, 0, 0.1, 0.0)),
                    StuckDetector(min_displacement_m=1.0, window_s=1.0, grace_s=0.0), predict, watcher,
                    realtime=False, max_drive_s=3600)
    return player, game, watcher


def test_swaps_only_at_unstuck(r: redis.Redis, keys: Keys) -> None:
    stop = threading.Event()
    player, game, watcher = make_player(r, keys, stop)
    watcher.start()
    store = WeightsStore(r, keys)
    env = Environment()
    # drive 1 s (the wall is 3 s away at full throttle): no stuck yet
    stats = player.run(env, threading.Event(), max_steps=30)
    assert stats.unstucks == 0
    store.publish({"throttle": torch.tensor([0.5])}, "m", batches=1)
    deadline = time.monotonic() + 10
    while watcher.pending_version != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watcher.pending_version == 1  # prepared in the background...
    assert player.version == 0 and float(player.model.throttle) == 1.0  # ...but not swapped mid-drive
    # keep driving: the car reaches the wall, gets stuck, Unstuck swaps the weights in
    stats = player.run(env, threading.Event(), max_steps=300)
    stop.set()
    assert stats.unstucks >= 1 and game.respawns >= 1
    assert player.version == 1 and float(player.model.throttle) == 0.5
    assert player.events[0]["swapped_to"] == 1


def test_late_player_picks_up_latest_at_unstuck_without_notification(r: redis.Redis, keys: Keys) -> None:
    stop = threading.Event()
    player, game, watcher = make_player(r, keys, stop)  # watcher thread never started: missed every message
    WeightsStore(r, keys).publish({"throttle": torch.tensor([0.7])}, "m", batches=1)
    stats = player.run(Environment(), threading.Event(), max_steps=400)
    assert stats.unstucks >= 1 and player.version == 1
    assert abs(float(player.model.throttle) - 0.7) < 1e-6


def test_weights_of_another_model_refused(r: redis.Redis, keys: Keys) -> None:
    stop = threading.Event()
    player, game, watcher = make_player(r, keys, stop)
    WeightsStore(r, keys).publish({"throttle": torch.tensor([0.7])}, "other-model", batches=1)
    player.run(Environment(), threading.Event(), max_steps=400)
    assert player.version == 0 and watcher.rejected == 1


class RecordingGame(WallGame):
    """Remembers each applied throttle and the thread that stepped the game."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[float] = []
        self.threads: set[str] = set()

    def step(self, controls: Controls | None = None) -> Observation:
        self.applied.append(controls.acceleration_braking if controls else 0.0)
        self.threads.add(threading.current_thread().name)
        return super().step(controls)


def counting_predict() -> tuple[list[str], object]:
    """A predict whose n-th call commands throttle n/100, recording the thread it ran in."""
    threads: list[str] = []

    def predict_n(model: torch.nn.Module, _ctx: dict[str, np.ndarray]) -> tuple[dict[str, list[float]], Controls]:
        threads.append(threading.current_thread().name)
        value = len(threads) / 100
        return {"acceleration_braking": [value]}, Controls(value, 0.0)

    return threads, predict_n


def test_overlapped_loop_applies_the_previous_prediction_while_predicting() -> None:
    for overlap in (False, True):
        game = RecordingGame()
        threads, predict_n = counting_predict()
        player = Player(game, Throttle(1.0), ContextBuilder(ContextSpec(30.0, 1, 0.1, 0, 0.1, 0.0)),
                        StuckDetector(min_displacement_m=0.0, window_s=100.0, grace_s=100.0), predict_n, None,
                        realtime=False, overlap=overlap)
        stats = player.run(Environment(map_seed=1), threading.Event(), max_steps=5)
        assert stats.steps == stats.predictions == 5
        expected = [0.01, 0.02, 0.03, 0.04, 0.05]
        if overlap:  # one tick of latency, starting from no input; stepped beside the prediction
            assert game.applied == [0.0, *expected[:4]]
            assert game.threads.isdisjoint(threads)
        else:
            assert game.applied == expected
            assert game.threads == set(threads)


def test_watcher_survives_malformed_weights_fields(r: redis.Redis, keys: Keys) -> None:
    """Issue 15 #14: a malformed field of the latest weights killed the watcher thread for
    good; it now says so, waits, and picks up the next good version."""
    stop = threading.Event()
    _player, _game, watcher = make_player(r, keys, stop)
    r.hset(keys.weights_latest, mapping={"version": "abc", "sha256": "x", "model": "m", "created": "t", "batches": "1"})
    watcher.start()
    time.sleep(0.5)
    assert watcher.is_alive()
    r.delete(keys.weights_latest)
    WeightsStore(r, keys).publish({"throttle": torch.tensor([0.3])}, "m", batches=2)
    deadline = time.monotonic() + 20
    while watcher.pending_version == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    assert watcher.pending_version >= 1


class DownGame(WallGame):
    """A real game whose bridge is down: every reset fails."""

    def reset(self, env: Environment | None = None) -> Observation:
        raise GameError("bridge down")


def test_stop_ends_a_player_whose_game_stays_down() -> None:
    """Issue 17: `_retry_game` retried forever and ignored `stop`; Ctrl-C hung the player."""
    player = Player(DownGame(), Throttle(1.0), ContextBuilder(ContextSpec(30.0, 1, 0.1, 0, 0.1, 0.0)),
                    StuckDetector(min_displacement_m=1.0, window_s=1.0, grace_s=0.0), predict, None, realtime=False)
    stop = threading.Event()
    done: list[int] = []
    runner = threading.Thread(target=lambda: done.append(player.run(Environment(), stop).steps), daemon=True)
    runner.start()
    time.sleep(1.0)
    assert runner.is_alive()  # still retrying the game
    stop.set()
    runner.join(5.0)
    assert done == [0]
