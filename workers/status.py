"""`charles status [--json]`: the whole system at a glance, from Redis."""

from __future__ import annotations

import json

import click

from pipeline.wire.redis_conn import CONNECTION_ERRORS, connect, keys_from_env, unreachable


@click.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def cli(as_json: bool) -> None:
    """Buffers, trainer, weights, players, collectors, dead letters."""
    from pipeline.observe.status import snapshot

    try:
        snap = snapshot(connect(), keys_from_env())
    except CONNECTION_ERRORS as exc:
        raise click.ClickException(unreachable(exc)) from None
    if as_json:
        click.echo(json.dumps(snap))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]run[/] {snap['run']}  config v{snap['config_version']}  "
                  f"weights v{snap['weights']['version']}  dead letters {snap['deadletter']}")
    table = Table("buffer", "fill", "capacity", "%", "sets routed", "sets dropped")
    for name, b in snap["buffers"].items():
        table.add_row(name, str(b["fill"]), str(b["capacity"]), f"{100 * b['fraction']:.0f}",
                      str(b["sets_routed"]), str(b["sets_dropped"]))
    console.print(table)
    t = snap["trainer"]
    console.print(f"[bold]trainer[/] {t['state']}  batches {t['batches']}  samples/s {t['samples_per_s']}")
    for p in snap["players"]:
        console.print(f"[bold]player[/] {p['id']} v{p['model_version']} on {p['device'] or '?'} swaps {p['swaps']} "
                      f"(last pause {p['swap_pause_ms']} ms) unstucks {p['unstucks']} pps {p['pps']}")
    for c in snap["collectors"]:
        console.print(f"[bold]collector[/] {c['id']} {c['state']} episodes {c['episodes']} samples {c['samples']}")
