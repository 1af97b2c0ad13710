"""`charles push CHECKPOINT_DIR`: publish an offline-trained checkpoint to the live players."""

from __future__ import annotations

import json
from pathlib import Path

import click
import structlog

from pipeline.log import configure_logging

log = structlog.get_logger("push")


@click.command(name="push")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
def cli(checkpoint: Path) -> None:
    """Check the checkpoint against the live config, then publish it as a new weights version."""
    configure_logging("push")
    from pipeline.errors import CharlesError
    from pipeline.play.push import push_checkpoint
    from pipeline.wire.redis_conn import (
        CONNECTION_ERRORS,
        connect,
        keys_from_env,
        redis_url,
        safe_url,
    )

    r, keys = connect(), keys_from_env()
    try:
        info, notes = push_checkpoint(r, keys, checkpoint)
    except CharlesError as exc:
        raise click.ClickException(str(exc)) from None
    except CONNECTION_ERRORS as exc:
        raise click.ClickException(f"cannot reach Redis at {safe_url(redis_url())}: {exc}") from None
    for note in notes:
        log.warning("push_note", note=note)
    click.echo(json.dumps({"version": info.version, "model": info.model, "sha256": info.sha256,
                           "batches": info.batches}))
