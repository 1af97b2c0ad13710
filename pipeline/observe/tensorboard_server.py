"""TensorBoard behind a Host check, so a web page cannot read the curves by DNS rebinding.

TensorBoard answers any Host header: a page on evil.example whose name re-resolves to
127.0.0.1 could read every curve and logged frame from a browser on this machine. Bound to
loopback, `charles tensorboard` answers only requests addressed to a loopback name (the
dashboard does the same); anything else gets 400 from werkzeug's trusted-hosts check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import SecurityError
from werkzeug.wsgi import get_host

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def trusted_hosts_only(app: WSGIApp, hosts: list[str]) -> WSGIApp:
    """`app`, answering 400 to requests whose Host header is not one of `hosts` (any port)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            get_host(environ, trusted_hosts=hosts)
        except SecurityError:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"Host not allowed: TensorBoard answers only its loopback names\n"]
        return app(environ, start_response)

    return guarded


def serve(logdir: str, host: str, port: int, hosts: list[str] | None) -> None:
    """Run TensorBoard until killed; `hosts` None serves any Host (a deliberate public bind)."""
    from tensorboard import program

    def server(app: WSGIApp, flags: Any) -> Any:
        return program.WerkzeugServer(app if hosts is None else trusted_hosts_only(app, hosts), flags)

    board = program.TensorBoard(server_class=server)
    board.configure(argv=[None, "--logdir", logdir, "--host", host, "--port", str(port)])
    board.main()
