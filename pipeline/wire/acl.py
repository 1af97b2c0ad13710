"""Redis ACL users: one per role on the Redis host, and one per remote machine.

A role's password comes from CHARLES_REDIS_PASSWORD_<ROLE> (`charles init` generates
them); roles without one are not created. The default user (CHARLES_REDIS_PASSWORD)
stays the admin and is never handed to another machine. A remote collector or player
gets a user of its own (`charles credentials add`, `pipeline.wire.credentials`) whose
patterns name only its own keys, so it can spoil nothing but the data it sends itself.

What each user may do (docs/security.md says why):
    collector NAME  XADD to its own streams (`stream:NAME:*`), SET its own `incoming:NAME:*`
                    rows, pop its own job list, its own presence/status; read the config
                    and the latest weights (DAgger)
    player NAME     its own presence/status and live-view frames; read weights and config;
                    subscribe to the weights channel
    collector       (shared, local machines only) the same over every collector's keys
    player          (shared, local machines only) the same over every player's keys
    trainer         the buffers, weights, loss history, its presence/status; read the config;
                    enqueue evaluation jobs (rq)
    server          everything under the key prefix, and rq
No collector or player may run EVAL, FUNCTION or any rq command, or touch an rq key.
Every role: no dangerous command (FLUSHALL, FLUSHDB, CONFIG, DEBUG, SHUTDOWN, KEYS,
MONITOR, ACL, SAVE, MODULE, REPLICAOF, ...), no SELECT/SWAPDB, no FUNCTION/SCRIPT FLUSH.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from pipeline.wire.keys import DEFAULT_PREFIX, RQ_ALL, Keys

ROLES: tuple[str, ...] = ("server", "trainer", "collector", "player")
#: Roles a remote machine may have a user of its own for.
MACHINE_ROLES: tuple[str, ...] = ("collector", "player")
#: Appended to every role's root permissions; selectors below grant single commands only.
DANGEROUS = "-@dangerous -@admin -select -swapdb -function -script|flush -script|kill -monitor -keys"
_CONNECTION = ("+ping +echo +hello +auth +client|setname +client|getname +client|id +acl|whoami "
               "+info +multi +exec +discard")
_READ_HASH = "+hget +hmget +hgetall"
_OWN_STATUS = "+set +hset +expire +pexpire +del +exists"


def _both(mark: str, k: Keys, name: Callable[[Keys], str]) -> str:
    """`mark` + a key or glob in both layouts of the prefix: a plain Redis', and a Redis
    Cluster's, where the keys outside the shards carry the `{global}` tag."""
    return " ".join(f"{mark}{name(layout)}" for layout in (replace(k, cluster=False), replace(k, cluster=True)))


def _sharded(k: Keys, *parts: str) -> str:
    """A shard key, or glob of them, untagged (one shard on a plain Redis) or in any shard."""
    return " ".join(f"~{g}" for g in k.sharded(*parts))


def collector_rules(k: Keys, name: str) -> str:
    """A collector's rules over the keys of `name` (`*`: every collector, the shared user)."""
    streams = " ".join(f"~{g}" for g in k.collector_family("stream", name))  # untagged, or in any shard
    rows = " ".join(f"~{g}" for g in k.collector_family("incoming", name))
    own = _both("~", k, lambda x: x.presence("collector", name)) + " " + _both("~", k, lambda x: x.status(
        "collector", name))
    return (f"{_CONNECTION} ({streams} +xadd) ({rows} +set) "
            f"({_both('~', k, lambda x: x.jobs(name))} +brpop +rpop +llen) "
            f"({_both('%R~', k, lambda x: x.config)} {_READ_HASH}) "
            f"({_both('%R~', k, lambda x: x.weights_latest)} {_READ_HASH}) ({own} {_OWN_STATUS})")


def player_rules(k: Keys, name: str) -> str:
    """A player's rules over the keys of `name` (`*`: every player, the shared user)."""
    own = " ".join(_both("~", k, fn) for fn in (lambda x: x.presence("player", name),
                                                   lambda x: x.status("player", name), lambda x: x.frame(name, "*")))
    return (f"{_CONNECTION} {_both('&', k, lambda x: x.weights_channel)} +subscribe +unsubscribe "
            f"({own} {_OWN_STATUS} +get) "
            f"({_both('%R~', k, lambda x: x.family('weights'))} {_both('%R~', k, lambda x: x.config)} "
            f"{_READ_HASH} +exists)")


def role_rules(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """ACL rules per role (without user name, password or reset), ready for `ACL SETUSER`;
    every pattern covers the keys of a plain Redis and of a Redis Cluster."""
    k = Keys(prefix)
    trainer_keys = " ".join(_both("~", k, fn) for fn in (
        lambda x: x.family("weights"), lambda x: x.family("trainer"), lambda x: x.presence_pattern("trainer"),
        lambda x: x.status_pattern("trainer")))
    return {
        "server": f"~{k.everything} ~{RQ_ALL} &{k.everything} &{RQ_ALL} +@all {DANGEROUS} {_CONNECTION}",
        "trainer": (
            f"{_sharded(k, 'buffer', '*')} {_sharded(k, 'drawn', '*')} {_sharded(k, 'counters')} {trainer_keys} "
            f"~{RQ_ALL} {_both('&', k, lambda x: x.weights_channel)} &{RQ_ALL} +@all {DANGEROUS} {_CONNECTION} "
            f"({_both('%R~', k, lambda x: x.config)} {_both('%R~', k, lambda x: x.evaluation + '*')} "
            f"{_READ_HASH} +exists)"
        ),
        "collector": collector_rules(k, "*"),
        "player": player_rules(k, "*"),
    }


def machine_rules(role: str, name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The rules of one machine's own user: its role's, over keys carrying its name only."""
    if role not in MACHINE_ROLES:
        raise ValueError(f"a machine user is a {' or a '.join(MACHINE_ROLES)}, not {role!r}")
    if not MACHINE_NAME.fullmatch(name):
        raise ValueError(f"machine name {name!r} must match {MACHINE_NAME.pattern}")
    k = Keys(prefix)
    return collector_rules(k, name) if role == "collector" else player_rules(k, name)


#: A machine's name is its ACL user and its worker id: no glob characters, no `:`.
MACHINE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def machine_line(role: str, name: str, password_sha256: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The `user ...` config line of one machine (its password only as a SHA-256)."""
    if not re.fullmatch(r"[0-9a-f]{64}", password_sha256):
        raise ValueError("a machine's password hash must be 64 hex digits")
    return f"user {name} on #{password_sha256} resetkeys resetchannels -@all {machine_rules(role, name, prefix)}"


def rule_arguments(rules: str) -> list[str]:
    """`ACL SETUSER` arguments of a rule string: words, with each `( ... )` selector one argument."""
    return re.findall(r"\([^)]*\)|\S+", rules)


def acl_lines(env: Mapping[str, str], machines: Iterable[tuple[str, str, str]] = ()) -> list[str]:
    """`user ...` config lines for the roles that have a password in the environment, and for
    each registered machine `(role, name, password sha256)`."""
    prefix = env.get("CHARLES_KEY_PREFIX", DEFAULT_PREFIX)
    lines = []
    for role, rules in role_rules(prefix).items():
        password = env.get(f"CHARLES_REDIS_PASSWORD_{role.upper()}")
        if password:
            if not re.fullmatch(r"[A-Za-z0-9_-]{16,}", password):
                raise ValueError(f"CHARLES_REDIS_PASSWORD_{role.upper()} must be 16+ characters of "
                                 "[A-Za-z0-9_-] (run `charles init` to generate one)")
            lines.append(f"user {role} on >{password} resetkeys resetchannels -@all {rules}")
    lines += [machine_line(role, name, digest, prefix) for role, name, digest in machines]
    return lines
