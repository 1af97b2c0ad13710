"""`charles bench player`: predictions/s of the whole driving loop vs the model's raw forward/s.

The loop is the real `Player` (game step -> context -> predict -> translate -> apply) on
the simulator in fast mode; the ceiling is `predict` alone on one context, same model,
same device, same run. The simulator's own step time is measured too, because with a
real game the frame comes from another process: `overhead_excl_game` is the part of a
loop iteration that is neither the model nor the game. The loop is timed once it drives
(after `start()` has built the world), Unstucks included.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pipeline.bench import result


def run(config_path: str | None = None, seconds: float = 10.0, device: str | None = None, **_: Any) -> dict[str, Any]:
    import torch

    from pipeline.collect.context import ContextBuilder
    from pipeline.config import load_config
    from pipeline.games.base import Controls, Environment, load_game
    from pipeline.games.io.control import ControllerTranslator
    from pipeline.games.options import game_options
    from pipeline.models import build_model, predict
    from pipeline.models.loading import pick_device
    from pipeline.play.player import Player
    from pipeline.play.unstuck import StuckDetector
    from pipeline.wire.schema import ContextSpec

    cfg = load_config(config_path)
    dev = pick_device(device or cfg.player.device, fall_back=True)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)).to(dev).eval()
    game = load_game(cfg.game.backend, own_process=cfg.player.game_process, **game_options(cfg, realtime=False))
    env = Environment(map_seed=cfg.collection.held_out_seeds[0])
    spec = ContextSpec.from_inputs(cfg.inputs, cfg.game.fps)

    ctx = ContextBuilder(spec)
    ctx.push(game.reset(env))
    context = ctx.context(0)
    for _ in range(20):
        predict(model, context)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 3:
        predict(model, context)
        n += 1
    forward_per_s = n / (time.perf_counter() - start)

    game.reset(env)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 3:
        game.step(Controls(0.3, 0.0))
        n += 1
    game_steps_per_s = n / (time.perf_counter() - start)

    u = cfg.unstuck
    player = Player(game, model, ContextBuilder(spec), StuckDetector(u.min_displacement_m, u.window_s, u.grace_s),
                    predict, watcher=None, translate=ControllerTranslator.from_config(cfg.control).display,
                    realtime=False, overlap=cfg.player.overlap)
    stop = threading.Event()
    loop = threading.Thread(target=player.run, args=(env, stop), daemon=True)
    loop.start()
    while player.stats.predictions < 10 and loop.is_alive():  # past start(): the world is built
        time.sleep(0.005)
    p0, t0 = player.stats.predictions, time.perf_counter()
    time.sleep(seconds / 3)
    p1, t1 = player.stats.predictions, time.perf_counter()
    stop.set()
    loop.join(10)
    stats = player.stats
    pps = (p1 - p0) / (t1 - t0)
    game.close()
    t_loop, t_fwd, t_game = 1 / pps, 1 / forward_per_s, 1 / game_steps_per_s
    return result(
        "player", pps, "predictions/s", forward_per_s,
        {"config": str(config_path or "configs/default.toml"), "device": str(dev),
         "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
         "game_steps_per_s": round(game_steps_per_s, 1),
         "loop_overhead": round(1 - t_fwd / t_loop, 4),
         "overhead_excl_game": round((t_loop - t_fwd - t_game) / t_loop, 4),
         "unstucks": stats.unstucks, "target_pps": cfg.player.pps, "overlap": cfg.player.overlap,
         "game_process": cfg.player.game_process},
    )
