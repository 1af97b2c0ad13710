"""`charles console [--player ID]`: the Server/Trainer console with the driving score per version, or one
player's console, live in the terminal."""

from __future__ import annotations

import threading
from typing import Any

import click

from pipeline.wire.redis_conn import (
    CONNECTION_ERRORS,
    connect,
    keys_from_env,
    redis_url,
    safe_url,
    unreachable,
)


@click.command(name="console")
@click.option("--player", "player_id", default=None,
              help="show this player's console (id or unique prefix; 'auto' = the first player)")
@click.option("--interval", default=1.0, show_default=True, help="seconds between refreshes")
@click.option("--once", is_flag=True, help="print one frame and exit (scripts, tests)")
def cli(player_id: str | None, interval: float, once: bool) -> None:
    """Refresh from Redis until Ctrl-C; a Redis outage is shown, not fatal."""
    from rich.console import Console, Group, RenderableType
    from rich.live import Live
    from rich.panel import Panel
    from rich.text import Text

    from pipeline.log import configure_logging
    from pipeline.observe.consoles import (
        Rates,
        pick_player,
        player_console,
        score_console,
        server_console,
    )
    from pipeline.observe.status import snapshot
    from pipeline.process import install_signal_handlers

    configure_logging("console")
    r, keys = connect(), keys_from_env()
    rates = Rates()
    wanted = None if player_id in (None, "auto") else player_id

    def frame() -> RenderableType:
        try:
            snap: dict[str, Any] = snapshot(r, keys)
        except CONNECTION_ERRORS as exc:
            return Panel(Text(f"cannot reach Redis at {safe_url(redis_url())}: {exc}\nretrying...", style="red"),
                         title="[bold]Charles")
        rates.update(snap)
        if player_id is None:
            return Group(server_console(snap, rates), score_console(snap))
        player = pick_player(snap, wanted)
        if player is None and wanted:
            known = ", ".join(str(p.get("id")) for p in snap.get("players", [])) or "none"
            return Panel(Text(f"no live player {wanted!r} (live: {known})", style="yellow"), title="[bold]Player")
        return player_console(player, snap.get("weights"))

    console = Console()
    if once:  # a script's check: what it could not show is an error, exit 1
        try:
            r.ping()
        except CONNECTION_ERRORS as exc:
            raise click.ClickException(unreachable(exc)) from None
        console.print(frame())
        if wanted and pick_player(snapshot(r, keys), wanted) is None:
            raise click.ClickException(f"--player: no live player {wanted!r}")
        return
    stop = threading.Event()
    install_signal_handlers(stop)
    with Live(frame(), console=console, refresh_per_second=4, screen=False, transient=False) as live:
        while not stop.wait(interval):
            live.update(frame())
