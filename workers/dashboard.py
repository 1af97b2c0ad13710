"""`charles dashboard`: the stream layout in a browser, read-only, on loopback by default."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

import click
import structlog

from pipeline.log import configure_logging
from pipeline.wire.redis_conn import CONNECTION_ERRORS, connect, keys_from_env, redis_url, safe_url

log = structlog.get_logger("dashboard")


@click.command(name="dashboard")
@click.option("--host", default=None, help="address to bind (default: [dashboard] host, 127.0.0.1)")
@click.option("--port", type=int, default=None, envvar="CHARLES_DASHBOARD_PORT",
              help="port (default: CHARLES_DASHBOARD_PORT, else [dashboard] port, 8000)")
@click.option("--refresh", default=1.0, show_default=True, help="seconds between status updates")
def cli(host: str | None, port: int | None, refresh: float) -> None:
    """Serve the page until Ctrl-C; Redis being away is shown on the page, not fatal."""
    configure_logging("dashboard")
    import uvicorn

    from pipeline.config import DashboardConfig, PlayerConfig
    from pipeline.observe.dashboard import Hub, create_app, loopback_hosts
    from pipeline.wire.config_store import fetch_config

    r, keys = connect(), keys_from_env()
    dash, player = DashboardConfig(), PlayerConfig()
    try:
        fetched = fetch_config(r, keys)
        if fetched is not None:
            dash, player = fetched[0].dashboard, fetched[0].player
    except CONNECTION_ERRORS as exc:
        log.warning("redis_unavailable", what="config", error=str(exc), using="defaults")
    host = host or dash.host
    port = port or dash.port
    if loopback_hosts(host) is None:
        log.warning("dashboard_not_on_loopback", host=host,
                    hint="anyone who can reach this address sees the page (read-only, no secrets)")
    hub = Hub(r, keys, refresh_s=refresh, frame_fps=player.live_view_fps or 10.0)
    app = create_app(hub, allowed_hosts=loopback_hosts(host))
    log.info("dashboard_starting", url=f"http://{host}:{port}", redis=safe_url(redis_url()))

    class Server(uvicorn.Server):
        """Ends the never-ending streams first, then stops: first signal = clean exit 0, second = now."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            hub.close()
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own version re-raises the signal after shutdown (exit 1 / killed)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    Server(config).run()
    log.info("dashboard_stopped")
