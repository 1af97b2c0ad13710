"""`charles export latest|best|vN FILE`: published weights from Redis to a safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.log import configure_logging
from workers.options import user_errors


@click.command(name="export")
@click.argument("which")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def cli(which: str, file: Path) -> None:
    """Write the latest, the best, or a kept version (vN) of the published weights to FILE,
    with their metadata (model, batches, config_sha256, version, sha256); prints it as JSON."""
    configure_logging("export")
    from pipeline.play.export import export_weights
    from pipeline.wire.redis_conn import CONNECTION_ERRORS, connect, keys_from_env, unreachable

    r, keys = connect(), keys_from_env()
    try:
        with user_errors():
            meta = export_weights(r, keys, which, file)
    except CONNECTION_ERRORS as exc:
        raise click.ClickException(unreachable(exc)) from None
    click.echo(json.dumps({"file": str(file), **meta}))
