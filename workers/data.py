"""`charles data ...`: inspect the data; `histogram` shows per-output bins of the buffers or of recordings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from workers.options import config_option


@click.group(name="data")
def cli() -> None:
    """Inspect the data: what reached the buffers, or what was recorded to disk."""


@cli.command()
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_path", default="histograms.png", show_default=True, help="PNG file ('' = none)")
@click.option("--limit", default=5000, show_default=True, help="samples read per buffer (SSCAN order)")
@config_option("config file: outputs, bins, label shift (default: the one in Redis; with DIRS configs/default.toml)")
def histogram(dirs: tuple[Path, ...], out_path: str, limit: int, config_path: Path | None) -> None:
    """Per-output histograms, as a PNG and in the terminal: of every buffer in Redis, or, given
    DIRS, of the samples recorded there (`charles record ...`), labelled as `charles train` would."""
    from pipeline.data.histogram import render_png, render_terminal
    from pipeline.log import configure_logging

    configure_logging("data")
    per_source = _of_recordings(dirs, config_path) if dirs else _of_buffers(limit, config_path)
    if not any(h.total for hists in per_source.values() for h in hists.values()):
        where = ", ".join(str(d) for d in dirs) if dirs else "the buffers"
        hint = "" if dirs else " (nothing reached them yet); recordings: charles data histogram DIR..."
        raise click.ClickException(f"no samples in {where}{hint}")
    render_terminal(per_source)
    if out_path:
        path = render_png(per_source, out_path)
        click.echo(f"wrote {path}", err=True)


def _of_recordings(dirs: tuple[Path, ...], config_path: Path | None) -> dict[str, Any]:
    """Bin counts of every sample in the data directories, together as source 'recordings'."""
    from pipeline.collect.bins import build_binnings
    from pipeline.config import load_config
    from pipeline.data.histogram import bin_counts
    from pipeline.train.dataset import DataSpec, RecordedDataset, find_episodes
    from pipeline.wire.schema import ContextSpec

    cfg = load_config(config_path)
    spec = DataSpec(ContextSpec.from_inputs(cfg.inputs, cfg.game.fps), cfg.game.hood_width, cfg.game.hood_height)
    targets, controls = RecordedDataset(find_episodes(dirs), spec).labels()
    return {"recordings": bin_counts(targets, controls, build_binnings(cfg.outputs))}


def _of_buffers(limit: int, config_path: Path | None) -> dict[str, Any]:
    """Bin counts of up to `limit` rows of each output's buffer in Redis."""
    import structlog

    from pipeline.collect.bins import build_binnings
    from pipeline.config import Config, load_config
    from pipeline.data.histogram import bin_counts, targets_from_rows
    from pipeline.serve.shards import ShardedBuffers
    from pipeline.wire.redis_conn import CONNECTION_ERRORS, connect, keys_from_env, unreachable

    log = structlog.get_logger("data")
    keys = keys_from_env()
    r = connect()
    try:
        if config_path:
            cfg = load_config(config_path)
        else:
            text = r.hget(keys.config, "json")
            if text is None:
                raise click.ClickException("no active config in Redis (is the server running?); pass --config")
            cfg = Config.from_json(text.decode() if isinstance(text, bytes) else text)
        binnings = build_binnings(cfg.outputs)
        per_buffer = {}
        for b in binnings:
            blobs = ShardedBuffers.for_config(r, keys, cfg).rows(b.name)  # every shard's rows
            targets, controls, skipped = targets_from_rows(blobs, limit)
            if skipped:
                log.warning("histogram_rows_skipped", buffer=b.name, skipped=skipped)
            per_buffer[b.name] = bin_counts(targets, controls, binnings)
    except CONNECTION_ERRORS as exc:
        raise click.ClickException(unreachable(exc)) from None
    return per_buffer
