"""Every role supervised: the Procfile's roles as a supervisord config that restarts crashes.

`charles supervise` (what `make run` starts) writes this config and runs supervisord in
the foreground. honcho stops every role when one exits; supervisord restarts only the
role that died, at once, while the others go on. Shutdown is ordered: the roles stop
together (each finishes its step and hands over its last sets), and Redis stops only
after every one of them has exited. Why supervisord and not a restarting honcho, with
the figures: docs/reliability.md ("Supervision").
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.errors import SupervisionError

#: The Procfile role that runs Redis: started first, stopped last.
REDIS_ROLE = "redis"
#: supervisord group of every other role: stopped together, before Redis.
ROLES_GROUP = "roles"
#: Seconds a role has to finish its step after SIGTERM before it is killed (Redis: its own).
ROLE_STOP_WAIT_S = 20
REDIS_STOP_WAIT_S = 60
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def read_procfile(path: Path) -> dict[str, str]:
    """`name: command` lines, in file order (blank lines and `#` comments skipped)."""
    roles: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name = name.strip()
        if not sep or not _NAME.match(name) or not command.strip():
            raise SupervisionError(f"{path}:{number}: expected 'name: command' (name of letters, "
                                   f"digits, - and _), got {line!r}")
        if name in roles:
            raise SupervisionError(f"{path}:{number}: role {name!r} is defined twice")
        roles[name] = command.strip()
    return roles


def parse_concurrency(text: str) -> dict[str, int]:
    """honcho's `-c collector=4,player=2`: processes per role (default 1; 0 leaves it out)."""
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise SupervisionError(f"concurrency {item!r}: expected ROLE=COUNT, e.g. collector=4")
        out[name.strip()] = int(count)
    return out


def _quote(value: str) -> str:
    """A value for supervisord's config: `%` is its interpolation character."""
    return value.replace("%", "%%")


def supervisord_config(procfile: Mapping[str, str], state_dir: Path, workdir: Path,
                       roles: Sequence[str] = (), concurrency: Mapping[str, int] | None = None) -> str:
    """The supervisord config that runs `roles` (default: every Procfile role) from `workdir`.

    Each role's command is written to `state_dir/<role>.sh` (`exec COMMAND`, run by
    /bin/sh, so the Procfile's `${VAR:-default}` and pipes work as under honcho) and runs
    in its own process group, which supervisord signals whole. Restart policy: always,
    at once; a role that dies within 1 s of its start is retried after 1, 2, 3... s.
    """
    concurrency = dict(concurrency or {})
    chosen = list(roles) or list(procfile)
    unknown = sorted(set(chosen) - set(procfile)) + sorted(set(concurrency) - set(procfile))
    if unknown:
        raise SupervisionError(f"no such role in the Procfile: {', '.join(unknown)} "
                               f"(roles: {', '.join(procfile)})")
    state_dir = state_dir.resolve()
    lines = [
        "; written by `charles supervise` from the Procfile; edits are overwritten",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={_quote(str(state_dir / 'supervisord.log'))}",
        "logfile_maxbytes=5MB",
        "logfile_backups=2",
        f"pidfile={_quote(str(state_dir / 'supervisord.pid'))}",
        f"childlogdir={_quote(str(state_dir))}",
        "",
        "[unix_http_server]",
        f"file={_quote(str(state_dir / 'supervisor.sock'))}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_quote(str(state_dir / 'supervisor.sock'))}",
        "",
    ]
    members = []
    for name in chosen:
        count = concurrency.get(name, 1)
        if count <= 0:
            continue
        script = state_dir / f"{name}.sh"
        is_redis = name == REDIS_ROLE
        if not is_redis:
            members.append(name)
        lines += [
            f"[program:{name}]",
            f"command=/bin/sh {_quote(shlex.quote(str(script)))}",
            f"directory={_quote(str(workdir.resolve()))}",
            f"numprocs={count}",
            "numprocs_start=1",
            "process_name=%(program_name)s" + ("_%(process_num)d" if count > 1 else ""),
            f"priority={10 if is_redis else 100}",
            "autostart=true",
            "autorestart=true",
            "startsecs=1",
            "startretries=100",
            "stopsignal=TERM",
            f"stopwaitsecs={REDIS_STOP_WAIT_S if is_redis else ROLE_STOP_WAIT_S}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            "stdout_logfile=/dev/stdout",
            "stdout_logfile_maxbytes=0",
            'environment=PYTHONUNBUFFERED="1"',
            "",
        ]
    if members:  # one group: stopped together, and entirely before Redis (priority 10) is stopped
        lines += [f"[group:{ROLES_GROUP}]", f"programs={','.join(members)}", "priority=100", ""]
    return "\n".join(lines)


def role_scripts(procfile: Mapping[str, str], roles: Sequence[str] = ()) -> dict[str, str]:
    """The shell script of each role: `exec` so that the role itself is supervisord's child."""
    return {name: f"# written by `charles supervise` from the Procfile\nexec {procfile[name]}\n"
            for name in (list(roles) or list(procfile))}
