"""DAgger in live collection: the latest published model drives, the game's expert labels.

`Collector.run_episode` runs on its own here (the collector's own client) against a
real redis-server; the config comes from Redis as a server would publish it. The sim's
NPC labels, and so does the expert of a plug-in with no simulator code (tests/lane_game.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch

from pipeline.collect.episode import Collector
from pipeline.collect.handoff import EpisodeSpec
from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, GameError
from pipeline.games.base import capabilities_of
from pipeline.models import build_model
from pipeline.serve.buffers import Buffers
from pipeline.serve.server import Server, sample_environment
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.rows import decode_row
from pipeline.wire.schema import SampleSchema
from pipeline.wire.stacking import stack_rows
from pipeline.wire.weights import WeightsStore

EPISODE_S = 4.0


@pytest.fixture
def state(r: redis.Redis, keys: Keys) -> Iterator[Collector]:
    """A collector process's state, using the test's client and prefix."""
    collector = Collector(r, keys, "collector-dagger-test")
    yield collector
    collector.games.close()


LANE_GAME = "tests.lane_game:LaneGame"


def dagger_config(model_drives: float, backend: str = "sim") -> Config:
    # min_bins_filled 0: a short episode's last round is sent, whatever bins it filled;
    # the model drives from the first published version (the default waits for version 5)
    return load_config(overrides={"collection": {"model_drives": model_drives, "model_drives_after_version": 1},
                                  "balancing": {"min_bins_filled": 0.0}, "game": {"backend": backend}})


def episode(collector: Collector, cfg: Config, name: str) -> dict[str, Any]:
    env = sample_environment(cfg.collection, random.Random(3), capabilities_of(cfg.game.backend))
    return collector.run_episode(EpisodeSpec(name, env, EPISODE_S))


def published_rows(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [decode_row(r.get(k)) for k in r.scan_iter(match=keys.incoming("*", "*", "*"), count=1000)]


def test_model_drives_and_the_npc_labels(r: redis.Redis, keys: Keys, state: Collector) -> None:
    cfg = dagger_config(1.0)
    publish_config(r, keys, cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    info = WeightsStore(r, keys).publish(model.state_dict(), cfg.run.name, batches=0)

    summary = episode(state, cfg, "dagger-ep0")
    ticks = int(EPISODE_S * cfg.game.fps)
    assert summary["ticks"] == ticks
    assert summary["model_ticks"] > ticks // 2, summary  # it hands over to the NPC only when stuck
    assert summary["model_version"] == info.version
    assert state.model_ticks == summary["model_ticks"] and state.model_version == info.version
    assert state.games.game is not None and state.games.game.options["expert_labels"] is True
    assert sum(summary["sets"].values()) > 0
    rows = published_rows(r, keys)
    assert rows
    applied = np.array([row["controls"] for row in rows])
    labels = np.array([row["targets"] for row in rows])
    assert np.abs(labels).max() <= 1.0
    # the model drove (applied controls), the NPC labelled (targets): they differ
    assert np.abs(labels - applied).max() > 0.3
    assert np.mean(np.abs(labels - applied).max(axis=1) > 0.05) > 0.5

    built = state.model
    episode(state, cfg, "dagger-ep1")  # same version: the cached model is reused, not fetched again
    assert state.model is built


def test_no_weights_the_npc_drives(r: redis.Redis, keys: Keys, state: Collector) -> None:
    cfg = dagger_config(1.0)
    publish_config(r, keys, cfg)
    summary = episode(state, cfg, "dagger-npc")
    assert summary["ticks"] == int(EPISODE_S * cfg.game.fps)
    assert summary["model_ticks"] == 0 and summary["model_version"] == 0
    assert sum(summary["sets"].values()) > 0 and published_rows(r, keys)
    assert state.model is None


def test_redis_error_fetching_weights_the_npc_drives(r: redis.Redis, keys: Keys, state: Collector,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dagger_config(1.0)
    publish_config(r, keys, cfg)

    def refused(self: WeightsStore) -> None:
        raise redis.ConnectionError("refused")

    monkeypatch.setattr(WeightsStore, "latest_info", refused)
    summary = episode(state, cfg, "dagger-refused")
    assert summary["model_ticks"] == 0 and summary["samples"] > 0


def test_model_drives_needs_a_backend_with_expert_labels() -> None:
    """Refused by what the backend declares, not by its name: gta5 and a plug-in without
    expert labels are refused, a plug-in with them is accepted, one that cannot be imported
    is named in one line."""
    for backend in ("gta5", "tests.growing_game:GrowingGame"):
        with pytest.raises(ConfigError, match=r"collection\.model_drives = 0\.5 needs a backend that gives expert"):
            load_config(overrides={"game": {"backend": backend}, "collection": {"model_drives": 0.5}})
        load_config(overrides={"game": {"backend": backend}, "collection": {"model_drives": 0.0}})
    assert load_config(overrides={"game": {"backend": LANE_GAME}, "collection": {"model_drives": 0.5}})
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"game": {"backend": "no_such_game.world:Game"}, "collection": {"model_drives": 0.5}})
    assert "cannot import 'no_such_game.world'" in str(err.value) and len(str(err.value).splitlines()) == 1
    with pytest.raises(ConfigError, match=r"collection\.model_drives"):
        load_config(overrides={"collection": {"model_drives": 1.5}})


def test_a_plugin_with_expert_labels_gets_dagger(r: redis.Redis, keys: Keys, state: Collector) -> None:
    """A backend with no simulator code, loaded by dotted path: the model drives, the
    backend's expert labels every tick; without DAgger its expert drives alone."""
    cfg = dagger_config(0.0, LANE_GAME)
    publish_config(r, keys, cfg)
    summary = episode(state, cfg, "lane-npc")
    assert summary["ticks"] == int(EPISODE_S * cfg.game.fps) and summary["model_ticks"] == 0
    assert sum(summary["sets"].values()) > 0
    game = state.games.game
    assert game is not None and game.expert_labels is False and game.labels == []
    npc_rows = published_rows(r, keys)
    assert npc_rows and all(row["policy_version"] == 0 for row in npc_rows)
    for key in r.scan_iter(match=keys.incoming("*", "*", "*"), count=1000):
        r.delete(key)

    cfg = dagger_config(1.0, LANE_GAME)
    publish_config(r, keys, cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    info = WeightsStore(r, keys).publish(model.state_dict(), cfg.run.name, batches=0)
    summary = episode(state, cfg, "lane-dagger")
    ticks = int(EPISODE_S * cfg.game.fps)
    assert summary["model_ticks"] == ticks and summary["model_version"] == info.version
    game = state.games.game
    assert game is not None and game.expert_labels is True and len(game.labels) == ticks
    rows = published_rows(r, keys)
    assert rows and all(row["policy_version"] == info.version for row in rows)
    labels = {tuple(np.float32(label)) for label in game.labels}
    targets = [tuple(np.float32(row["targets"])) for row in rows]
    assert all(t in labels for t in targets)  # every target is the expert's command ...
    applied = np.array(game.applied)
    assert np.abs(np.array(game.labels) - applied).max() > 0.3  # ... not the model's, which drove


def test_dagger_refuses_a_game_that_does_not_label(r: redis.Redis, keys: Keys, state: Collector) -> None:
    """A tick the model drove without the expert's label would teach the model its own
    commands: the episode stops with a GameError instead."""
    cfg = dagger_config(1.0, LANE_GAME)
    publish_config(r, keys, cfg)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    WeightsStore(r, keys).publish(model.state_dict(), cfg.run.name, batches=0)
    state.games.get(cfg, expert_labels=True).expert_labels = False  # it declares labels but gives none
    with pytest.raises(GameError, match=r"no info\['expert'\]"):
        episode(state, cfg, "lane-unlabelled")


def test_capture_time_and_driving_version_reach_the_trainer(r: redis.Redis, keys: Keys, state: Collector) -> None:
    """Each sample carries when it was captured and which weights drove: collector -> stream ->
    server -> buffer -> the trainer's draw, unchanged."""
    cfg = dagger_config(1.0)
    publish_config(r, keys, cfg)
    server = Server(r, keys, cfg, rescan_s=0)
    server.setup()
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    info = WeightsStore(r, keys).publish(model.state_dict(), cfg.run.name, batches=0)
    before = time.time()
    summary = episode(state, cfg, "provenance-ep")
    after = time.time()
    published = published_rows(r, keys)
    sent = {(row["captured_at"], row["policy_version"]) for row in published}
    assert info.version in {v for _, v in sent} <= {0, info.version}  # the NPC drives only a stuck model's way out
    assert all(before <= t <= after for t, _ in sent)
    assert summary["model_ticks"] > 0
    while server.route_once(block_ms=10):
        pass
    buffers = Buffers(r, keys, cfg.output_names(), cfg.buffers.capacity, 0.0)  # draw and delete: everything at once
    drawn = buffers.draw(10_000)
    rows = [row for rows in drawn.rows.values() for row in rows]
    provenance: dict[str, np.ndarray] = {}
    stack_rows(rows, SampleSchema.from_config(cfg), provenance=provenance)
    got = set(zip(provenance["captured_at"].tolist(), provenance["policy_version"].tolist(), strict=True))
    assert len(rows) == len(published) and got == sent


def test_an_installed_plugin_is_named_by_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: a game package registers its backend in the entry-point group `charles.games`,
    so `pip install mygame` is all a machine needs and the config names it `backend = "mygame"`."""
    import importlib

    from pipeline.evaluate.closed_loop import backend_fingerprint
    from pipeline.games.base import load_game
    from tests.lane_game import LaneGame

    dist = tmp_path / "charles_lane_game-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: charles-lane-game\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[charles.games]\nlane = tests.lane_game:LaneGame\n")
    with pytest.raises(ConfigError, match="unknown backend"):
        load_config(overrides={"game": {"backend": "lane"}, "collection": {"model_drives": 0.5}})
    # the active config from Redis is read where the plug-in is not installed (charles status)
    assert Config.from_json(Config.model_validate({"game": {"backend": "lane"}}).to_json()).game.backend == "lane"
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    cfg = load_config(overrides={"game": {"backend": "lane"}, "collection": {"model_drives": 0.5}})
    assert capabilities_of(cfg.game.backend).expert_labels  # DAgger allowed by what it declares
    game = load_game("lane", expert_labels=True)
    assert isinstance(game, LaneGame) and game.expert_labels
    assert backend_fingerprint("lane") == backend_fingerprint("tests.lane_game:LaneGame") != "unknown"
    with pytest.raises(ConfigError, match=r"'lame' is neither a built-in .* installed plug-in .*\['lane'\]"):
        load_game("lame")
