"""The keys remote machines write, kept bounded: one without a TTL, or too big, is deleted.

Redis' ACLs say which keys a user may write, never how: a collector or player holding its
credentials can still `SET` its own frame, status or row without `EX`, or a value of
hundreds of megabytes, and it would stay past `maxmemory` for good. No EVAL (the ACLs drop
it) means no write larger than the command that carried it; this sweep, run by the server,
takes what a machine wrote against the rules away again within `SWEEP_S`: every key of the
families a collector or player may write must carry a TTL and stay under its family's cap.
"""

from __future__ import annotations

import redis
import structlog

from pipeline.wire.keys import Keys

log = structlog.get_logger(__name__)
SWEEP_S = 10.0
#: Caps per family, in bytes as MEMORY USAGE counts them (a frame is a JPEG or a small raw image).
FRAME_MAX = 8 * 2**20
STATUS_MAX = 256 * 2**10
JOBS_MAX = 256 * 2**10


def untrusted_families(keys: Keys, row_max: int) -> list[tuple[str, int]]:
    """(glob, size cap) of each key family a collector or player may write (rows in any shard)."""
    rows = [(glob, row_max + STATUS_MAX) for glob in keys.collector_family("incoming", "*")]
    return [(keys.family("frame"), FRAME_MAX), (keys.presence_pattern("*"), STATUS_MAX),
            (keys.family("status"), STATUS_MAX), (keys.family("jobs"), JOBS_MAX), *rows]


def sweep(r: redis.Redis, keys: Keys, row_max: int, batch: int = 500) -> int:
    """Delete every key of those families that has no TTL or exceeds its cap; returns how many."""
    removed = 0
    for pattern, cap in untrusted_families(keys, row_max):
        found = list(r.scan_iter(match=pattern, count=1000))
        for start in range(0, len(found), batch):
            chunk = found[start : start + batch]
            pipe = r.pipeline(transaction=False)
            for key in chunk:
                pipe.pttl(key)
                pipe.memory_usage(key, samples=0)
            replies = pipe.execute()
            bad = [key for key, ttl, size in zip(chunk, replies[::2], replies[1::2], strict=True)
                   if int(ttl) == -1 or (size is not None and int(size) > cap)]
            if bad:
                r.unlink(*bad)
                removed += len(bad)
                log.warning("untrusted_keys_removed", keys=[k.decode(errors="replace")[:120] for k in bad[:10]],
                            count=len(bad), reason="no TTL or over its cap")
    return removed
