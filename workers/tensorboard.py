"""`charles tensorboard`: TensorBoard on the run logs, answering loopback Host names only."""

from __future__ import annotations

import os

import click
import structlog

from pipeline.log import configure_logging

log = structlog.get_logger("tensorboard")


@click.command(name="tensorboard")
@click.option("--logdir", default="runs", show_default=True, help="folder of the run logs")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", type=int, default=lambda: int(os.environ.get("CHARLES_TENSORBOARD_PORT", "6006")),
              show_default="6006, or CHARLES_TENSORBOARD_PORT", help="port")
def cli(logdir: str, host: str, port: int) -> None:
    """Serve TensorBoard until stopped (DNS rebinding cannot reach it on loopback)."""
    configure_logging("tensorboard")
    from pipeline.observe.dashboard import loopback_hosts
    from pipeline.observe.tensorboard_server import serve

    hosts = loopback_hosts(host)
    if hosts is None:
        log.warning("tensorboard_not_on_loopback", host=host, hint="anyone who can reach this address reads the curves")
    log.info("tensorboard_starting", url=f"http://{host}:{port}", logdir=logdir)
    serve(logdir, host, port, hosts)
