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

from pipeline.wire.keys import COLLECT_QUEUE, DEFAULT_PREFIX, Keys

ROLES: tuple[str, ...] = ("server", "trainer", "collector", "player")
#: Appended to every role's root permissions; selectors below grant single commands only.
DANGEROUS = "-@dangerous -@admin -select -swapdb -function -script|flush -script|kill -monitor -keys"
_CONNECTION = "+ping +echo +hello +auth +client|setname +client|getname +client|id +acl|whoami +info"


def role_rules(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """ACL rules per role (without user name, password or reset), ready for `ACL SETUSER`."""
    keys = Keys(prefix)
    p = prefix
    queue = keys.queue(COLLECT_QUEUE)
    job = keys.job_id(COLLECT_QUEUE, "")
    rq_collect = " ".join(
        [f"~rq:queue:{queue}", f"~rq:queue:{queue}:*", f"~rq:*:{queue}", "~rq:queues", "~rq:workers", "~rq:suspended", "~rq:clean_groups", "%R~rq:groups", "%R~rq:rl-keys",
         f"~rq:job:{job}*", f"~rq:job::{job}*", f"~rq:results:{job}*", f"~rq:executions:{job}*", f"~rq:execution:{job}*",
         "~rq:worker:collector-*", "&rq:pubsub:collector-*"]
    )
    return {
        "server": f"~{p}* ~rq:* &{p}* &rq:* +@all {DANGEROUS} {_CONNECTION}",
        "trainer": (
            f"~{p}buffer:* ~{p}drawn:* ~{p}weights:* ~{p}trainer:* ~{p}worker:trainer:* ~{p}status:trainer:* "
            f"~{p}counters ~rq:* &{p}weights &rq:* +@all {DANGEROUS} {_CONNECTION} "
            f"(%R~{p}config %R~{p}evaluation* +hget +hmget +hgetall +exists)"
        ),
        "collector": (
            f"{rq_collect} +@all {DANGEROUS} {_CONNECTION} "
            f"(~{p}stream:* +xadd) (~{p}incoming:* +set +multi +exec) "
            f"(%R~{p}config +hget +hmget +hgetall) (%R~{p}weights:latest +hget +hmget +hgetall) "
            f"(~{p}worker:collector:* ~{p}status:collector:* +set +hset +expire +pexpire +del +exists)"
        ),
        "player": (
            f"~{p}worker:player:* ~{p}status:player:* ~{p}frame:* &{p}weights "
            f"+set +hset +expire +pexpire +del +exists +get +subscribe +unsubscribe {_CONNECTION} "
            f"(%R~{p}weights:* %R~{p}config +hget +hmget +hgetall +exists)"
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
