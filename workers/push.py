"""`charles push CHECKPOINT`: publish an offline-trained checkpoint (folder or safetensors file) to the players."""

from __future__ import annotations

import json
from pathlib import Path

import click
import structlog

from pipeline.log import configure_logging
from workers.options import user_errors

log = structlog.get_logger("push")


@click.command(name="push")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
def cli(checkpoint: Path) -> None:
    """Check CHECKPOINT (a checkpoint folder, or a safetensors file such as
    models/charles_small_cnn.safetensors) against the live config, then publish it as a new
    weights version."""
    configure_logging("push")
    from pipeline.play.push import push_checkpoint
    from pipeline.wire.redis_conn import CONNECTION_ERRORS, connect, keys_from_env, unreachable

    r, keys = connect(), keys_from_env()
    try:
        with user_errors():
            info, notes = push_checkpoint(r, keys, checkpoint)
    except CONNECTION_ERRORS as exc:
        raise click.ClickException(unreachable(exc)) from None
    for note in notes:
        log.warning("push_note", note=note)
    click.echo(json.dumps({"version": info.version, "model": info.model, "sha256": info.sha256,
                           "batches": info.batches}))
