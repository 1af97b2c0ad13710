"""`charles server`: publish the config, route sample sets into buffers, hand out episodes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import click
import redis
import structlog

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.log import configure_logging
from pipeline.process import install_signal_handlers
from pipeline.serve.server import Server
from pipeline.wire.presence import Presence
from pipeline.wire.redis_conn import (
    CONNECTION_ERRORS,
    Backoff,
    connect,
    keys_from_env,
    redis_url,
    safe_url,
)

log = structlog.get_logger("server")


@click.command(name="server")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="TOML run config (default: configs/default.toml)")
@click.option("--consumer", default="server-1", show_default=True, help="stable consumer name (reclaims its own pending entries)")
@click.option("--max-seconds", type=float, default=None, help="stop after this long (tests)")
def cli(config_path: Path | None, consumer: str, max_seconds: float | None) -> None:
    """Validate the config, then serve until SIGTERM."""
    configure_logging("server")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    install_signal_handlers(stop)
    r, keys = connect(), keys_from_env()
    log.info("server_starting", redis=safe_url(redis_url()), run=config.run.name, outputs=config.output_names())
    server = Server(r, keys, config, consumer=consumer)
    presence = Presence(r, keys, "server", consumer)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    backoff = Backoff()
    ready = False
    last_beat = 0.0
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        try:
            if not ready:
                version = server.setup()
                log.info("config_published", version=version)
                ready = True
            server.route_once(block_ms=200)
            if time.monotonic() - last_beat >= 1.0:
                server.supply_jobs()
                server.trim_streams()
                presence.beat(**server.status())
                last_beat = time.monotonic()
            backoff.reset()
        except CONNECTION_ERRORS as exc:
            ready = False
            delay = backoff.next_delay()
            log.warning("redis_unavailable", what="server", error=str(exc), retry_in_s=round(delay, 2))
            stop.wait(delay)
        except redis.RedisError as exc:  # e.g. OOM past maxmemory: wait for memory, never exit
            ready = False
            delay = backoff.next_delay()
            log.warning("redis_refused", what="server", error=str(exc), retry_in_s=round(delay, 2))
            stop.wait(delay)
    log.info("server_stopped", routed_sets=server.stats.routed_sets, rejected=server.stats.rejected)
