"""`charles data ...`: inspect the data; `histogram` shows per-output bins of every buffer."""

from __future__ import annotations

from pathlib import Path

import click

from workers.options import config_option


@click.group(name="data")
def cli() -> None:
    """Inspect the data that reached the buffers."""


@cli.command()
@click.option("--out", "out_path", default="histograms.png", show_default=True, help="PNG file ('' = none)")
@click.option("--limit", default=5000, show_default=True, help="samples read per buffer (SSCAN order)")
@config_option("config file (default: the one in Redis)")
def histogram(out_path: str, limit: int, config_path: Path | None) -> None:
    """Per-output histograms of every buffer, as a PNG and in the terminal."""
    import structlog

    from pipeline.collect.bins import build_binnings
    from pipeline.config import Config, load_config
    from pipeline.data.histogram import bin_counts, render_png, render_terminal, targets_from_rows
    from pipeline.log import configure_logging
    from pipeline.serve.buffers import Buffers
    from pipeline.wire.redis_conn import (
        CONNECTION_ERRORS,
        connect,
        keys_from_env,
        redis_url,
        safe_url,
    )

    configure_logging("data")
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
            blobs = Buffers(r, keys, [b.name], cfg.buffers.capacity).rows(b.name)
            targets, controls, skipped = targets_from_rows(blobs, limit)
            if skipped:
                log.warning("histogram_rows_skipped", buffer=b.name, skipped=skipped)
            per_buffer[b.name] = bin_counts(targets, controls, binnings)
    except CONNECTION_ERRORS as exc:
        raise click.ClickException(f"cannot reach Redis at {safe_url(redis_url())}: {exc}") from None
    render_terminal(per_buffer)
    if out_path:
        path = render_png(per_buffer, out_path)
        click.echo(f"wrote {path}", err=True)
