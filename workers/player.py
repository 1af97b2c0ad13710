"""`charles player`: drive with the latest weights and swap new ones in at each Unstuck."""

from __future__ import annotations

import hashlib
import random
import threading

import click
import structlog

from pipeline.log import configure_logging
from pipeline.process import install_signal_handlers, wait_for_config
from pipeline.wire.presence import BackgroundReporter, Presence, worker_id_for
from pipeline.wire.redis_conn import connect, keys_from_env, redis_url, safe_url

log = structlog.get_logger("player")


@click.command(name="player")
@click.option("--weights", "weights_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="start from a local safetensors file instead of the published weights")
@click.option("--sha256", "weights_sha256", default=None,
              help="with --weights: the file's expected sha256 (hex); refused when it differs")
@click.option("--max-steps", type=int, default=None, help="stop after this many predictions (tests)")
@click.option("--seed", type=int, default=None, help="map seed to drive on")
@click.option("--fast", is_flag=True, help="do not pace to real time (tests, benchmarks)")
def cli(weights_file: str | None, weights_sha256: str | None, max_steps: int | None, seed: int | None,
        fast: bool) -> None:
    """Acquire config and weights, drive, hot-swap at Unstuck, until SIGTERM."""
    configure_logging("player")
    import torch

    from pipeline.collect.context import ContextBuilder
    from pipeline.errors import WeightsError
    from pipeline.games.base import Environment, load_game
    from pipeline.games.options import game_options
    from pipeline.models import build_model, predict
    from pipeline.models.loading import build_model_from, pick_device
    from pipeline.play.player import Player, WeightsWatcher
    from pipeline.play.unstuck import StuckDetector
    from pipeline.wire.schema import ContextSpec
    from pipeline.wire.weights import WeightsStore, blob_metadata, from_blob

    torch.set_num_threads(1)
    stop = threading.Event()
    install_signal_handlers(stop)
    r, keys = connect(), keys_from_env()
    worker_id = worker_id_for(r, "player", stop)  # a per-machine user: its name
    if worker_id is None:
        return
    log.info("player_starting", id=worker_id, redis=safe_url(redis_url()))
    fetched = wait_for_config(r, keys, stop)
    if fetched is None:
        return
    cfg, _ = fetched
    device = pick_device(cfg.player.device, fall_back=True)

    def build(tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
        return build_model_from(cfg, tensors, device)  # in the watcher thread: off the driving loop

    version, created = 0, 0.0
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)).eval().to(device)
    if weights_file:
        with open(weights_file, "rb") as fh:
            blob = fh.read()
        digest = hashlib.sha256(blob).hexdigest()
        log.info("weights_file", path=weights_file, sha256=digest)  # to compare with where it came from
        try:  # its metadata names the config it needs, should it not fit the live one
            model = build_model_from(cfg, from_blob(blob, weights_sha256.lower() if weights_sha256 else None), device,
                                     meta=blob_metadata(blob))
        except WeightsError as exc:
            raise click.ClickException(f"{weights_file}: {exc} (sha256 {digest})") from None
    else:
        try:
            info, tensors = WeightsStore(r, keys).fetch()
            model, version, created = build(tensors), info.version, info.created
        except WeightsError as exc:
            log.info("no_weights_yet", detail=str(exc), driving="untrained model (version 0)")
    watcher = None if weights_file else WeightsWatcher(r, keys, build, cfg.run.name, cfg.player.follow, stop)
    if watcher is not None:
        watcher.current_version = version
        watcher.start()
    game = load_game(cfg.game.backend, own_process=cfg.player.game_process,
                     **game_options(cfg, realtime=cfg.player.realtime and not fast))
    reporter = BackgroundReporter(Presence(r, keys, "player", worker_id))
    from pipeline.games.io.control import ControllerTranslator
    from pipeline.play.live_view import LiveView

    translate = ControllerTranslator.from_config(cfg.control).display
    live_view = LiveView(r, keys, worker_id, game, cfg.player.live_view_fps, cfg.player.jpeg_quality)
    ctx = ContextBuilder(ContextSpec.from_inputs(cfg.inputs, cfg.game.fps))
    u = cfg.unstuck
    player = Player(
        game, model, ctx, StuckDetector(u.min_displacement_m, u.window_s, u.grace_s), predict, watcher,
        translate=translate, pps=cfg.player.pps, realtime=not fast, max_drive_s=u.max_drive_s,
        report=lambda status: reporter.update(**status, model=cfg.run.name, device=str(device)),
        live_view=live_view, version=version, model_created=created, overlap=cfg.player.overlap,
    )
    rng = random.Random()
    env = Environment(map_seed=seed if seed is not None else rng.randint(*cfg.player.map_seeds),
                      time_of_day=12.0, weather="clear", episode_seed=rng.randrange(2**31))
    try:
        stats = player.run(env, stop, max_steps=max_steps)
    finally:
        stop.set()
        reporter.close()
        game.close()
    log.info("player_stopped", steps=stats.steps, swaps=stats.swaps, unstucks=stats.unstucks, version=player.version)
