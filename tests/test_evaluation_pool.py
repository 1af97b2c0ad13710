"""Episodes driven in parallel child processes give exactly the traces one process gives, in plan order."""

from __future__ import annotations

import threading

import torch

from pipeline.evaluate.closed_loop import (
    NPC,
    EvalSettings,
    Evaluator,
    model_policy,
    score_policy,
    summarize,
)
from pipeline.evaluate.pool import EpisodePool
from pipeline.games.base import load_game
from pipeline.games.options import game_options
from pipeline.models import build_model
from tests.factories import tiny_config


def _config():  # type: ignore[no-untyped-def]
    return tiny_config(
        game={"cinematic_width": 32, "cinematic_height": 18},
        model={"width": 8, "dense": 32, "head": [16]},
        evaluator={"episode_s": 3.0, "environments": ["day", "night", "traffic"], "episodes_per_environment": 1,
                   "processes": 2},
    )


def test_parallel_episodes_equal_sequential_ones() -> None:
    cfg = _config()
    settings = EvalSettings.from_config(cfg)
    torch.manual_seed(3)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)).eval()
    game = load_game(cfg.game.backend, **game_options(cfg, realtime=False))
    try:  # one game for every episode, one after another: the reference
        sequential = Evaluator(game, settings)
        npc_seq, model_seq = sequential.run(NPC), sequential.run(model_policy(model))
    finally:
        game.close()
    pool = EpisodePool(cfg.to_json(), settings.processes)
    try:
        parallel = Evaluator(None, settings, pool)
        npc_par = parallel.run(NPC)
        model_par = parallel.run(model_policy(model))  # weights travel as a safetensors blob
        assert [t.environment for t in model_par] == ["day", "night", "traffic"]
        assert [t.ticks for t in npc_par] == [t.ticks for t in npc_seq]
        assert [t.ticks for t in model_par] == [t.ticks for t in model_seq]
        # scores with intervals come out of the pool as from one process
        refs = {"npc": summarize(npc_par), "baseline": {**summarize(npc_par), "ratio_to_npc": 1.0}}
        scores = score_policy(parallel, model_policy(model), refs)
        assert scores["intervals"]["episodes"] == 3 and scores["intervals"]["method"] == "exact"
        assert scores["metrics"] == summarize(model_seq)["metrics"]
        # a stop before the run: nothing driven, the children ended, and the next run starts new ones
        stop = threading.Event()
        stop.set()
        assert parallel.run(NPC, stop) == []
        assert [t.ticks for t in parallel.run(NPC)] == [t.ticks for t in npc_seq]
    finally:
        pool.close()
