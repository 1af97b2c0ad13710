"""`charles server`: publish the config, route sample sets into buffers, hand out episodes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import click
import structlog

from pipeline.config import load_config
from pipeline.log import configure_logging
from pipeline.process import install_signal_handlers
from pipeline.serve.server import Server
from pipeline.wire.presence import Presence
from pipeline.wire.redis_conn import connect, keys_from_env, redis_url, safe_url
from workers.options import user_errors

log = structlog.get_logger("server")


@click.command(name="server")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="TOML run config (default: configs/default.toml)")
@click.option("--consumer", default="server-1", show_default=True, help="stable consumer name (reclaims its own pending entries)")
@click.option("--shard", "shards", type=int, multiple=True,
              help="route only this pipeline shard (repeatable; default: every shard of [buffers] shards); the "
                   "server of shard 0 also publishes the config and hands out episodes")
@click.option("--max-seconds", type=float, default=None, help="stop after this long (tests)")
def cli(config_path: Path | None, consumer: str, shards: tuple[int, ...], max_seconds: float | None) -> None:
    """Validate the config, then serve until SIGTERM."""
    configure_logging("server")
    with user_errors():
        config = load_config(config_path)
    stop = threading.Event()
    install_signal_handlers(stop)
    r, keys = connect(), keys_from_env()
    log.info("server_starting", redis=safe_url(redis_url()), run=config.run.name, outputs=config.output_names())
    with user_errors():
        server = Server(r, keys, config, consumer=consumer, shards=list(shards) or None)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    server.run(stop, Presence(r, keys, "server", consumer), deadline)
