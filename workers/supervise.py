"""`charles supervise`: every Procfile role under supervisord (what `make run` starts).

A role that dies (kill -9, OOM, a crash) is restarted at once while the others go on;
Ctrl-C or SIGTERM stops the roles first (each finishes its step) and Redis last.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from pipeline.errors import CharlesError
from pipeline.supervision import parse_concurrency, read_procfile, role_scripts, supervisord_config


def _supervisord() -> str:
    """supervisord next to this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "supervisord"
    found = str(beside) if beside.is_file() else shutil.which("supervisord")
    if found is None:
        raise click.ClickException("supervisord was not found: pip install -c constraints.txt -e . "
                                   "(it is one of Charles' dependencies)")
    return found


@click.command(name="supervise")
@click.argument("roles", nargs=-1)
@click.option("-c", "--concurrency", default="", help="processes per role, e.g. collector=4,player=2")
@click.option("-f", "--procfile", default="Procfile", show_default=True, type=click.Path(path_type=Path))
@click.option("--state-dir", default="var/supervisor", show_default=True, type=click.Path(path_type=Path),
              help="where the generated config, role scripts, socket and supervisord.log go")
@click.option("--print-config", is_flag=True, help="print the supervisord config and exit")
def cli(roles: tuple[str, ...], concurrency: str, procfile: Path, state_dir: Path, print_config: bool) -> None:
    """Run ROLES (default: every role in the Procfile) under supervisord, in the foreground."""
    try:
        commands = read_procfile(procfile)
        config = supervisord_config(commands, state_dir, procfile.resolve().parent, roles,
                                    parse_concurrency(concurrency))
    except (OSError, CharlesError) as exc:
        raise click.ClickException(str(exc)) from None
    if print_config:
        click.echo(config)
        return
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)  # the scripts and the control socket: this user only
    for name, text in role_scripts(commands, roles).items():
        (state_dir / f"{name}.sh").write_text(text)
    conf = state_dir / "supervisord.conf"
    conf.write_text(config)
    binary = _supervisord()
    sys.stdout.flush()
    os.execv(binary, [binary, "--nodaemon", "--configuration", str(conf)])
