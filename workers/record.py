"""`charles record ...`: keep samples on disk: from the streams, from a drive, or imported."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import click
import structlog

from pipeline.games.base import WEATHERS
from pipeline.log import configure_logging
from workers.options import budget_option, config_option, out_option, user_errors

log = structlog.get_logger("record")


@click.group(name="record")
def cli() -> None:
    """Record samples to disk (see docs/datasets.md for the format)."""


@cli.command()
@out_option()
@budget_option()
@click.option("--consumer", default="recorder-1", show_default=True,
              help="stable consumer name: a restarted recorder finishes its own pending entries")
@click.option("--chunk-rows", type=int, default=256, show_default=True, help="samples per chunk file")
@click.option("--chunk-age-s", type=float, default=5.0, show_default=True, help="write a chunk at least this often")
@click.option("--compress", is_flag=True, help="zlib-compress chunks (smaller, read whole instead of mapped)")
@click.option("--max-seconds", type=float, default=None, help="stop after this long (tests)")
def streams(out_dir: Path, budget_bytes: int | None, consumer: str, chunk_rows: int, chunk_age_s: float,
            compress: bool, max_seconds: float | None) -> None:
    """Record every sample set on the streams (own consumer group) until SIGTERM."""
    configure_logging("recorder")
    from pipeline.data.stream_recorder import record_streams
    from pipeline.process import install_signal_handlers
    from pipeline.wire.redis_conn import connect, keys_from_env, redis_url, safe_url

    stop = threading.Event()
    install_signal_handlers(stop)
    log.info("recorder_starting", redis=safe_url(redis_url()), out=str(out_dir), budget_bytes=budget_bytes)
    record_streams(connect(), keys_from_env(), out_dir, stop, budget_bytes, consumer,
                   None if max_seconds is None else time.monotonic() + max_seconds,
                   chunk_rows=chunk_rows, chunk_age_s=chunk_age_s, compress=compress)


@cli.command()
@out_option()
@config_option("run config: game backend, frame size, fps (default: configs/default.toml)")
@click.option("--driver", type=click.Choice(["human", "npc"]), default="human", show_default=True)
@click.option("--seconds", type=float, default=None, help="game seconds to record (default: until Ctrl-C)")
@click.option("--seed", "--map-seed", "map_seed", type=int, default=1, show_default=True, help="map seed (any integer)")
@click.option("--weather", type=click.Choice(WEATHERS), default="clear", show_default=True)
@click.option("--time", "--time-of-day", "time_of_day", type=click.FloatRange(0, 24), default=12.0,
              show_default=True, help="time of day, hours")
@click.option("--traffic", type=click.FloatRange(0, 1), default=0.3, show_default=True, help="traffic density 0..1")
@click.option("--padding-s", type=float, default=0.0, show_default=True,
              help="a 'stuck' recording: its first seconds are padding, never a training sample")
@budget_option()
@click.option("--compress", is_flag=True, help="zlib-compress chunks")
def drive(out_dir: Path, config_path: Path | None, driver: str, seconds: float | None, map_seed: int,
          weather: str, time_of_day: float, traffic: float, padding_s: float,
          budget_bytes: int | None, compress: bool) -> None:
    """Record every tick of a drive (a human on the keyboard/pad, or the NPC) as one episode.

    On the sim backend the human drives in a window (needs pygame: pip install
    'charles[viewer]'): Up/W throttle, Down/S brake and reverse, Left/A Right/D steer;
    Esc/Q or closing the window ends the recording.
    """
    configure_logging("record")
    from pipeline.config import load_config
    from pipeline.data.drive_recorder import record_drive
    from pipeline.games.base import Environment
    from pipeline.process import install_signal_handlers

    stop = threading.Event()
    install_signal_handlers(stop)
    env = Environment(map_seed=map_seed, weather=weather, time_of_day=time_of_day,
                      traffic_density=traffic, episode_seed=int(time.time()) % 2**31)
    with user_errors():
        summary = record_drive(load_config(config_path), out_dir, driver, env, seconds, stop, padding_s,
                               budget_bytes, compress)
    click.echo(json.dumps(summary.as_dict()))


@cli.command(name="import-seed004")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@out_option()
@click.option("--fps", type=float, default=80.0, show_default=True, help="frame rate of the recording")
@click.option("--stuck-padding", type=int, default=300, show_default=True,
              help="frames of padding at the start of files whose path contains 'stuck'")
@click.option("--classes", default="w,a,s,d,wa,wd,none", show_default=True, help="one-hot label order")
@click.option("--bgr", is_flag=True, help="frames were saved BGR (OpenCV order)")
@click.option("--minimap-box", default=None, help="x,y,w,h fractions of the frame (default: GTA5's)")
def import_seed004_cmd(src: Path, out_dir: Path, fps: float, stuck_padding: int, classes: str, bgr: bool,
                       minimap_box: str | None) -> None:
    """Convert seed-004 HDF5 (images + one-hot labels) recordings into Charles' format."""
    configure_logging("record")
    from pipeline.data.chunks import ChunkWriter
    from pipeline.data.seed004 import import_seed004, parse_minimap_box

    with user_errors():
        box = parse_minimap_box(minimap_box)  # before the output folder is made
        summary = import_seed004(src, ChunkWriter(out_dir), fps=fps, stuck_padding=stuck_padding,
                                 classes=[c.strip() for c in classes.split(",")], bgr=bgr, minimap_box=box)
    click.echo(json.dumps(summary.as_dict()))


@cli.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def info(dirs: tuple[Path, ...]) -> None:
    """Episodes, samples and size of data directories, as one JSON object."""
    from pipeline.data.chunks import describe

    click.echo(json.dumps(describe(dirs), indent=1))
