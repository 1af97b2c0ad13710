"""`charles sim`: watch the NPC drive the built-in simulator, drive it yourself, or record a video."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import click

from pipeline.errors import VIEWER_INSTALL
from pipeline.games.base import WEATHERS
from pipeline.games.sim.viewer import KEYS_HELP
from workers.options import config_option


def _window(size: tuple[int, int]) -> Any:
    """The pygame window, or a ClickException that says what is missing."""
    from pipeline.errors import GameError, MissingExtraError
    from pipeline.games.sim.viewer import SimWindow

    try:
        return SimWindow(size, "Charles sim")
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from None
    except GameError as exc:
        raise click.ClickException(f"{exc}; headless, `--record FILE.mp4` writes the NPC's drive to a video") from None


def _parse_size(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int]:
    width, _, height = value.partition("x")
    if not (width.isdigit() and height.isdigit() and 16 <= int(width) <= 4096 and 16 <= int(height) <= 4096):
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT in pixels (16..4096 each), e.g. 640x360")
    return int(width), int(height)


@click.command(name="sim", epilog=f"Keys in the window: {KEYS_HELP}. The window needs pygame: {VIEWER_INSTALL}.")
@click.option("--seed", "--map-seed", "seed", default=1, show_default=True, help="map seed (any integer)")
@click.option("--episode", default=0, show_default=True, help="episode seed: traffic, spawn, targets")
@click.option("--weather", type=click.Choice(WEATHERS), default="clear", show_default=True)
@click.option("--time", "--time-of-day", "hours", type=click.FloatRange(0, 24), default=12.0, show_default=True,
              help="time of day, hours")
@click.option("--car", type=click.Choice(["sedan", "sports", "truck"]), default="sedan", show_default=True)
@click.option("--traffic", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="traffic density 0..1")
@click.option("--style", type=click.Choice(["calm", "normal", "aggressive"]), default="normal", show_default=True,
              help="the NPC's driving style")
@click.option("--seconds", default=60.0, show_default=True, help="game seconds to run (real time in a window)")
@click.option("--npc/--keyboard", "npc", default=True,
              help="let the NPC drive, or drive with the keyboard: arrows or WASD, Esc quits")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="let this safetensors model drive instead (no Redis): e.g. models/charles_small_cnn.safetensors")
@config_option("with --weights: the run config the model was trained with (default: configs/default.toml)")
@click.option("--record", type=click.Path(dir_okay=False), default=None,
              help="write an MP4 (H.264 where available) instead of opening a window")
@click.option("--size", default="640x360", show_default=True, callback=_parse_size, help="chase camera size WxH")
@click.option("--pictures", type=click.Path(file_okay=False), default=None,
              help="write hood and chase PNGs by day, at night and in rain into this folder, then exit")
def cli(seed: int, episode: int, weather: str, hours: float, car: str, traffic: float, style: str,
        seconds: float, npc: bool, weights: str | None, config_path: Path | None, record: str | None,
        size: tuple[int, int], pictures: str | None) -> None:
    """Watch the NPC or a model drive the built-in simulator, drive it yourself, or record an MP4.

    At the end one JSON line goes to stdout: game seconds, frames, distance driven (odometer)
    and forward (signed, along the car), top speed, and per drive key the frames it was held.
    """
    from pipeline.games.base import Environment
    from pipeline.games.sim import SimGame
    from pipeline.games.sim.drive import docs_pictures, drive
    from pipeline.games.sim.viewer import VideoOut
    from pipeline.log import configure_logging
    from pipeline.process import install_signal_handlers

    configure_logging("sim")
    env = Environment(map_seed=seed, weather=weather, time_of_day=hours, car=car, traffic_density=traffic,
                      episode_seed=episode, npc_style=style)
    if pictures:
        for path in docs_pictures(Path(pictures), env, seconds, size):
            click.echo(str(path))
        return
    if not npc and (record or weights):
        raise click.UsageError("--keyboard drives in a window: drop --record and --weights")
    if config_path and not weights:
        raise click.UsageError("--config is the config of a --weights model; without --weights the NPC drives")
    model = None
    if weights:
        from pipeline.play.model_driver import load_model_driver

        model = load_model_driver(weights, config_path)
    window = None if record else _window(size)  # before the world is built: fail fast
    options = {"realtime": record is None, "cinematic_size": size}
    if model is not None:
        from pipeline.games.options import game_options

        options = {**game_options(model.cfg, realtime=record is None), **options}
    game, video, stop = SimGame(**options), None, threading.Event()
    install_signal_handlers(stop)  # Ctrl-C or SIGTERM end the drive: the MP4 is closed, the summary printed
    try:
        obs = game.reset(env)
        video = VideoOut(record, game.fps, size) if record else None
        result = drive(game, obs, seconds, window, video, model, npc, stop)
    finally:
        for resource in (video, window, game):
            if resource is not None:
                resource.close()
    summary = {"driver": "model" if model is not None else "npc" if npc else "keyboard", "weights": weights,
               **result.as_dict(), "record": record, "codec": video.codec if video is not None else None}
    if video is not None and video.note:
        import structlog

        structlog.get_logger("sim").warning("video_codec", file=record, codec=video.codec, note=video.note)
    click.echo(json.dumps(summary))
