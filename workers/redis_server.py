"""`charles redis`: run the project's own redis-server from infra/redis.conf.

The port and password come from the environment (.env); they go into a runtime file
under var/redis (mode 0600, never committed) that includes infra/redis.conf. The data
folder is 0700 and every file Redis writes in it 0600 (umask 077): the RDB and AOF hold
every sample, the weights and the config.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import click

from pipeline.wire.local_redis import private_data_dir
from pipeline.wire.redis_conn import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = (
    "redis-server was not found on PATH. Install it:\n"
    "  Debian/Ubuntu:  sudo apt-get install redis-server\n"
    "  Fedora:         sudo dnf install redis\n"
    "  macOS:          brew install redis\n"
    "then run this command again."
)


def runtime_config(data_dir: Path, port: int, password: str) -> str:
    """The lines added to infra/redis.conf for this machine (port, password, data folder,
    and CHARLES_REDIS_MAXMEMORY's memory budget when set)."""
    if not password:
        raise click.ClickException("CHARLES_REDIS_PASSWORD is empty: run `charles init` to create .env")
    if len(password) < 16 or password == "change-me":
        raise click.ClickException("CHARLES_REDIS_PASSWORD is too weak (16+ characters): "
                                   "run `charles init` on a fresh .env to generate one")
    from pipeline.errors import ConfigError
    from pipeline.wire import credentials
    from pipeline.wire.acl import acl_lines

    try:  # the roles' users from .env, and every machine `charles credentials add` registered
        machines = credentials.as_acl_entries(credentials.load(credentials.registry_path()))
        users = acl_lines(os.environ, machines)
    except (ValueError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    lines = [
        f"include {ROOT / 'infra' / 'redis.conf'}",
        f"dir {data_dir}",
        f"port {port}",
        f"requirepass {password}",
        *users,
    ]
    maxmemory = os.environ.get("CHARLES_REDIS_MAXMEMORY", "").strip()
    if maxmemory:  # a run whose buffers need more than infra/redis.conf's 2gb (docs/scaling.md)
        if not re.fullmatch(r"[0-9]+(?:[kmg]b?)?", maxmemory, re.IGNORECASE):
            raise click.ClickException(f"CHARLES_REDIS_MAXMEMORY={maxmemory!r}: a size like 5gb or 5000mb")
        lines.append(f"maxmemory {maxmemory}")
    extra = os.environ.get("CHARLES_REDIS_BIND", "").split()
    if extra:  # remote collectors/players: listen on these addresses too (see docs/reliability.md)
        lines.append("bind 127.0.0.1 -::1 " + " ".join(extra))
    return "\n".join(lines) + "\n"


@click.command(name="redis")
@click.option("--data-dir", default="var/redis", show_default=True, type=click.Path(path_type=Path))
def cli(data_dir: Path) -> None:
    """Start redis-server with the project's config (exec: honcho manages the real process)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise click.ClickException(INSTALL_HINT)
    data_dir = data_dir.resolve()
    private_data_dir(data_dir)
    port = int(os.environ.get("CHARLES_REDIS_PORT", DEFAULT_PORT))
    conf = data_dir / "runtime.conf"
    text = runtime_config(data_dir, port, os.environ.get("CHARLES_REDIS_PASSWORD", ""))
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # passwords: never world-readable
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    conf.chmod(0o600)
    os.umask(0o077)  # inherited by redis-server: every RDB/AOF file it writes is 0600, dirs 0700
    os.execv(binary, [binary, str(conf)])
