"""Per-machine Redis users: a registry file on the Redis host, applied live and at every start.

`charles credentials add collector NAME` writes the machine to the registry (its role, and
its password only as a SHA-256: the file never holds a secret) and creates the ACL user on
the running Redis; `charles redis` turns the registry into `user` lines at every start
(`pipeline.wire.acl.acl_lines`, the one place ACL lines are built), so a restart keeps it.
`revoke` removes it from both; ACL DELUSER also closes the machine's open connections.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from pipeline.errors import ConfigError
from pipeline.wire.acl import MACHINE_NAME, MACHINE_ROLES, machine_rules, rule_arguments
from pipeline.wire.presence import SHARED_USERS

#: Where the registry lives unless CHARLES_CREDENTIALS_FILE says otherwise (on the Redis host).
DEFAULT_REGISTRY = Path("var/credentials.json")


@dataclass(frozen=True)
class Machine:
    role: str
    name: str
    password_sha256: str
    created: float


def registry_path(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    return Path(env.get("CHARLES_CREDENTIALS_FILE", str(DEFAULT_REGISTRY)))


def load(path: Path) -> list[Machine]:
    """The registered machines (none when the file does not exist)."""
    if not path.exists():
        return []
    try:
        return [Machine(**m) for m in json.loads(path.read_text())["machines"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a credentials registry ({exc})") from None


def _save(path: Path, machines: list[Machine]) -> None:
    """Write atomically, mode 0600 (names and hashes only, still nobody else's business)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"machines": [asdict(m) for m in machines]}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def add(path: Path, role: str, name: str, prefix: str, r: redis.Redis | None) -> str:
    """Register a machine and create its user on `r` (the admin connection; None: at the
    next start only); returns its password, which is stored nowhere."""
    if role not in MACHINE_ROLES:
        raise ConfigError(f"role must be one of {MACHINE_ROLES}, not {role!r}")
    if not MACHINE_NAME.fullmatch(name) or name in SHARED_USERS:
        raise ConfigError(f"machine name {name!r} must match {MACHINE_NAME.pattern} and not be one of {SHARED_USERS}")
    machines = load(path)
    if any(m.name == name for m in machines):
        raise ConfigError(f"{name!r} is already registered (revoke it first to issue a new password)")
    password = secrets.token_urlsafe(32)
    digest = hashlib.sha256(password.encode()).hexdigest()
    if r is not None:
        r.execute_command("ACL", "SETUSER", name, "reset", "on", f"#{digest}", "resetkeys", "resetchannels", "-@all",
                          *rule_arguments(machine_rules(role, name, prefix)))
    _save(path, [*machines, Machine(role, name, digest, time.time())])
    return password


def revoke(path: Path, name: str, r: redis.Redis | None) -> Machine:
    """Remove a machine from the registry and from the running Redis (closing its connections)."""
    machines = load(path)
    found = next((m for m in machines if m.name == name), None)
    if found is None:
        raise ConfigError(f"no machine {name!r} in {path}")
    if r is not None:
        r.execute_command("ACL", "DELUSER", name)
    _save(path, [m for m in machines if m.name != name])
    return found


def as_acl_entries(machines: list[Machine]) -> list[tuple[str, str, str]]:
    """What `acl_lines` takes: (role, name, password sha256) per machine."""
    return [(m.role, m.name, m.password_sha256) for m in machines]
