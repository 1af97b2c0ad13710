"""Per-role Redis ACL users, so remote collectors and players get only what they need.

A role's password comes from CHARLES_REDIS_PASSWORD_<ROLE> (`charles init` generates
them); roles without one are not created. The default user (CHARLES_REDIS_PASSWORD)
stays the admin and is never handed to another machine.

What each role may do (docs/reliability.md, "Security", says why):
    collector  SET rows under incoming:*, XADD manifests to the sample streams; read the
               config and the latest weights (DAgger); its own presence/status;
               rq on the collect queue and on collect jobs only (job ids `*-collect-*`)
    player     read weights and config; subscribe to the weights channel; its own
               presence/status and live-view frames
    trainer    the buffers, weights, loss history, its presence/status; read the config;
               enqueue evaluation jobs
    server     everything under the key prefix, and rq
Every role: no dangerous command (FLUSHALL, FLUSHDB, CONFIG, DEBUG, SHUTDOWN, KEYS,
MONITOR, ACL, SAVE, MODULE, REPLICAOF, ...), no SELECT/SWAPDB, no FUNCTION/SCRIPT FLUSH.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pipeline.wire.keys import (
    COLLECT_QUEUE,
    DEFAULT_PREFIX,
    RQ_ALL,
    RQ_READ_ONLY,
    Keys,
    rq_worker_patterns,
)

ROLES: tuple[str, ...] = ("server", "trainer", "collector", "player")
#: Appended to every role's root permissions; selectors below grant single commands only.
DANGEROUS = "-@dangerous -@admin -select -swapdb -function -script|flush -script|kill -monitor -keys"
_CONNECTION = "+ping +echo +hello +auth +client|setname +client|getname +client|id +acl|whoami +info"


def role_rules(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """ACL rules per role (without user name, password or reset), ready for `ACL SETUSER`."""
    k = Keys(prefix)
    rq_keys, rq_channels = rq_worker_patterns(k.queue(COLLECT_QUEUE), k.job_id(COLLECT_QUEUE, ""), "collector-")
    rq_collect = " ".join([f"~{p}" for p in rq_keys[:7]] + [f"%R~{p}" for p in RQ_READ_ONLY]
                          + [f"~{p}" for p in rq_keys[7:]] + [f"&{c}" for c in rq_channels])
    read_hash = "+hget +hmget +hgetall"
    own = {role: f"~{k.presence_pattern(role)} ~{k.status_pattern(role)}" for role in ROLES}
    return {
        "server": f"~{k.everything} ~{RQ_ALL} &{k.everything} &{RQ_ALL} +@all {DANGEROUS} {_CONNECTION}",
        "trainer": (
            f"~{k.family('buffer')} ~{k.family('drawn')} ~{k.family('weights')} ~{k.family('trainer')} {own['trainer']} "
            f"~{k.counters} ~{RQ_ALL} &{k.weights_channel} &{RQ_ALL} +@all {DANGEROUS} {_CONNECTION} "
            f"(%R~{k.config} %R~{k.evaluation}* {read_hash} +exists)"
        ),
        "collector": (
            f"{rq_collect} +@all {DANGEROUS} {_CONNECTION} "
            f"(~{k.family('stream')} +xadd) (~{k.family('incoming')} +set +multi +exec) "
            f"(%R~{k.config} {read_hash}) (%R~{k.weights_latest} {read_hash}) "
            f"({own['collector']} +set +hset +expire +pexpire +del +exists)"
        ),
        "player": (
            f"{own['player']} ~{k.family('frame')} &{k.weights_channel} "
            f"+set +hset +expire +pexpire +del +exists +get +subscribe +unsubscribe {_CONNECTION} "
            f"(%R~{k.family('weights')} %R~{k.config} {read_hash} +exists)"
        ),
    }


def acl_lines(env: Mapping[str, str]) -> list[str]:
    """`user ...` config lines for the roles that have a password in the environment."""
    prefix = env.get("CHARLES_KEY_PREFIX", DEFAULT_PREFIX)
    lines = []
    for role, rules in role_rules(prefix).items():
        password = env.get(f"CHARLES_REDIS_PASSWORD_{role.upper()}")
        if password:
            if not re.fullmatch(r"[A-Za-z0-9_-]{16,}", password):
                raise ValueError(f"CHARLES_REDIS_PASSWORD_{role.upper()} must be 16+ characters of "
                                 "[A-Za-z0-9_-] (run `charles init` to generate one)")
            lines.append(f"user {role} on >{password} resetkeys resetchannels -@all {rules}")
    return lines
