"""`charles sim`: watch the NPC drive the built-in simulator, drive it yourself, or record a video."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.errors import VIEWER_INSTALL
from pipeline.games.base import WEATHERS
from pipeline.games.sim.viewer import KEYS_HELP
from workers.options import config_option

if TYPE_CHECKING:
    from pipeline.play.model_driver import ModelDriver


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


_PICTURES = (("day", "clear", 12.5), ("night", "clear", 22.5), ("rain", "rain", 15.0), ("fog", "fog", 9.0))


def _pictures(folder: str, seed: int, episode: int, car: str, traffic: float, seconds: float, size: tuple[int, int]) -> None:
    """The docs pictures: the same drive under each look, hood (4x, nearest) and chase camera."""
    from pathlib import Path

    import cv2

    from pipeline.games.base import Environment
    from pipeline.games.sim import SimGame

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    game = SimGame(cinematic_size=size)
    for name, weather, hours in _PICTURES:
        obs = game.reset(Environment(map_seed=seed, episode_seed=episode, weather=weather, time_of_day=hours,
                                     car=car, traffic_density=traffic))
        while obs.game_time < seconds:
            obs = game.step()
        hood = cv2.resize(obs.frame, (obs.frame.shape[1] * 4, obs.frame.shape[0] * 4), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(out / f"sim_hood_{name}.png"), cv2.cvtColor(hood, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / f"sim_chase_{name}.png"), cv2.cvtColor(game.cinematic(), cv2.COLOR_RGB2BGR))
        click.echo(f"{out}/sim_*_{name}.png")


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
    from pipeline.games.sim.viewer import KeyboardDriver, VideoOut, composite
    from pipeline.log import configure_logging

    configure_logging("sim")
    if pictures:
        _pictures(pictures, seed, episode, car, traffic, seconds, size)
        return
    if not npc and (record or weights):
        raise click.UsageError("--keyboard drives in a window: drop --record and --weights")
    if config_path and not weights:
        raise click.UsageError("--config is the config of a --weights model; without --weights the NPC drives")
    model = _load_model(weights, config_path) if weights else None
    window = None if record else _window(size)  # before the world is built: fail fast
    options = {"realtime": record is None, "cinematic_size": size}
    if model is not None:
        from pipeline.games.options import game_options

        options = {**game_options(model.cfg, realtime=record is None), **options}
    game = SimGame(**options)
    env = Environment(map_seed=seed, weather=weather, time_of_day=hours, car=car, traffic_density=traffic,
                      episode_seed=episode, npc_style=style)
    try:
        obs = game.reset(env)
        video = VideoOut(record, game.fps, size) if record else None
    except BaseException:
        game.close()
        if window is not None:
            window.close()
        raise
    if model is not None:
        model.start(obs)
    keyboard = KeyboardDriver()
    held = {"up": 0, "down": 0, "left": 0, "right": 0}
    frames, forward, top, respawns, ended = 0, 0.0, 0.0, 0, "time"
    try:
        if window is not None:
            window.show(composite(game, obs))
        while obs.game_time < seconds:
            controls = None if model is None else model.controls()
            if window is not None:
                keys = window.keys()
                if "quit" in keys:
                    ended = "quit"
                    break
                if "respawn" in keys:
                    obs = game.respawn()
                    if model is not None:
                        model.start(obs)
                for k in held.keys() & keys:
                    held[k] += 1
                if not npc:
                    controls = keyboard.controls(keys)
            obs = game.step(controls)
            frames += 1
            forward += obs.speed * game.dt
            top = max(top, obs.speed)
            stuck = model.observe(obs) if model is not None else npc and obs.info.get("stuck")
            if stuck:
                obs = game.respawn()
                respawns += 1
                if model is not None:
                    model.start(obs)
            frame = composite(game, obs)
            if video is not None:
                video.write(frame)
            else:
                window.show(frame)
    finally:
        if video is not None:
            video.close()
        if window is not None:
            window.close()
        game.close()
    summary = {"driver": "model" if model is not None else "npc" if npc else "keyboard",
               "weights": weights, "game_s": round(obs.game_time, 2), "frames": frames,
               "distance_m": round(obs.odometer, 2), "forward_m": round(forward, 2), "max_speed": round(top, 2),
               "collisions": obs.collisions, "targets": obs.targets_reached, "respawns": respawns,
               "keys_held_frames": held, "ended": ended, "record": record,
               "codec": video.codec if video is not None else None}
    if video is not None and video.note:
        import structlog

        structlog.get_logger("sim").warning("video_codec", file=record, codec=video.codec, note=video.note)
    click.echo(json.dumps(summary))


def _load_model(weights: str, config_path: Path | None) -> ModelDriver:
    """The weights file's model as a driver (with its config), or a one-line error."""
    import torch

    from pipeline.config import DEFAULT_CONFIG, load_config
    from pipeline.models.loading import build_model_from, read_weights_file
    from pipeline.play.model_driver import ModelDriver

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))  # the simulator needs a core too
    cfg = load_config(config_path)
    if cfg.game.backend != "sim":
        raise click.UsageError(f"{config_path}: game.backend is {cfg.game.backend!r}; `charles sim` drives the "
                               "built-in simulator only (a model on another backend: `charles player --weights`)")
    tensors, meta = read_weights_file(weights)
    model = build_model_from(cfg, tensors, source=weights, meta=meta, config_file=config_path or DEFAULT_CONFIG)
    return ModelDriver(model, cfg)
