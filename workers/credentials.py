"""`charles credentials`: a Redis user per remote collector or player, on the Redis host.

`add` prints the new password once (or writes it, mode 0600, to --password-file); it is
never logged and never stored: the registry keeps its SHA-256 only. `revoke` takes a
machine off in one command, closing its connections. Run these where `charles redis`
runs, with the admin password in .env.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click
import redis

from pipeline.wire import credentials
from pipeline.wire.acl import MACHINE_ROLES
from pipeline.wire.redis_conn import keys_from_env, redis_url, safe_url


def _admin() -> redis.Redis | None:
    """The running Redis as admin, or None (then the change takes effect at its next start)."""
    r = redis.Redis.from_url(redis_url(), socket_connect_timeout=3, socket_timeout=5)
    try:
        r.ping()
    except redis.ConnectionError:
        click.echo(f"Redis at {safe_url(redis_url())} is not running: the registry changes now, "
                   "Redis at its next start.", err=True)
        return None
    return r


@click.group(name="credentials")
def cli() -> None:
    """Per-machine Redis users for remote collectors and players."""


@cli.command(name="add")
@click.argument("role", type=click.Choice(MACHINE_ROLES))
@click.argument("name")
@click.option("--password-file", type=click.Path(path_type=Path), default=None,
              help="write the password here (mode 0600) instead of printing it")
def add(role: str, name: str, password_file: Path | None) -> None:
    """Create the user NAME, confined to that machine's own keys."""
    path = credentials.registry_path()
    password = credentials.add(path, role, name, keys_from_env().prefix, _admin())
    if password_file is not None:
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        click.echo(f"{role} {name}: password written to {password_file}")
    else:
        click.echo(f"{role} {name}: password (shown once): {password}")
    click.echo(f"On that machine: CHARLES_REDIS_URL=redis://{name}:<password>@<this host>:<port>/0")


@cli.command(name="revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Delete the user NAME now; its open connections are closed."""
    machine = credentials.revoke(credentials.registry_path(), name, _admin())
    click.echo(f"revoked {machine.role} {machine.name}")


@cli.command(name="list")
def list_machines() -> None:
    """The registered machines: role, name, created."""
    for m in credentials.load(credentials.registry_path()):
        created = datetime.fromtimestamp(m.created, UTC).strftime("%Y-%m-%d %H:%M UTC")
        click.echo(f"{m.role:10} {m.name:40} {created}")
