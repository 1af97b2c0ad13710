"""Routing one pipeline shard: check each set's manifest, route its rows into the shard's buffers.

Every collector appends to streams of its own (`SampleStreams` finds them), so a machine
can trim or block only its own transport. Routing is at-least-once from the stream and
exactly-once into the buffer: every entry is a manifest (the set's meta and each row's
head), checked here; the rows themselves, finished buffer rows the collector wrote as its
own `incoming` keys, never reach the server:
one script in Redis compares each with its checked head and renames it into the buffer,
with the XACK and the counters (`Buffers.route_set`). A bad entry is dead-lettered with
its reason and acknowledged, never retried forever. Entries left pending by a crashed
server are reclaimed (its own on start, others' with XAUTOCLAIM). Every key a router
touches is its shard's (`Keys.shards`), so on a Redis Cluster it talks to one node.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import redis
import structlog

from pipeline.config import Config
from pipeline.errors import CodecError, SampleError
from pipeline.serve.buffers import Buffers
from pipeline.wire.consumer_group import PendingRecovery
from pipeline.wire.keys import RECORDER_GROUP, SERVER_GROUP, Counter, Keys
from pipeline.wire.manifest import META_FIELD, EntryView, SetMeta, check_entry, row_field
from pipeline.wire.sample_streams import RESCAN_S, SampleStreams
from pipeline.wire.schema import SampleSchema

log = structlog.get_logger(__name__)
DEADLETTER_MAXLEN = 1000
_META = META_FIELD.encode()
RECORDER_CHECK_S = 10.0
#: A departed collector's drained streams are deleted once silent this long.
DEPARTED_IDLE_S = 600.0


def _entry_bytes(fields: dict[bytes, bytes]) -> int:
    """What an entry weighs on the stream (for the dead letter), whatever it holds."""
    return sum(len(name) + len(value) for name, value in fields.items())


@dataclass
class RouteStats:
    routed_sets: int = 0
    routed_samples: int = 0
    rejected: int = 0
    dropped: int = 0
    last_rates: dict[str, float] = field(default_factory=dict)


class ShardRouter:
    """The server's work on one shard: its consumer groups, routing, dead letters, trimming."""

    def __init__(self, r: redis.Redis, keys: Keys, config: Config, buffers: Buffers, consumer: str,
                 stats: RouteStats, rescan_s: float = RESCAN_S) -> None:
        self.r = r
        self.keys = keys
        self.config = config
        self.buffers = buffers
        self.consumer = consumer
        self.stats = stats
        self.outputs = config.output_names()
        self.schema = SampleSchema.from_config(config)
        self.max_bytes = int(config.buffers.max_message_mb * 1024 * 1024)
        self.recovery = PendingRecovery(r, SERVER_GROUP, consumer)
        self.streams = SampleStreams(r, keys, self.outputs, SERVER_GROUP, rescan_s)  # 0: tests publish, then route
        self._recorder: dict[str, tuple[float, bool]] = {}  # stream -> (checked at, recorder group seen)

    def setup(self) -> None:
        """Find the shard's streams and create the consumer group on each (idempotent)."""
        self.streams.reset()
        self.streams.refresh()
        self.recovery.reset()

    def route_once(self, block_ms: int | None = 500, count: int = 16) -> int:
        """Read and route one round of entries (`block_ms` None: without waiting); returns
        the number of entries handled.

        Full buffers keep reading: routing evicts their oldest samples, so the pool stays fresh."""
        if self.streams.refresh():
            self.recovery.reset()  # a new stream may hold entries this consumer read before a restart
        streams = sorted(self.streams.known)
        handled = self.recovery.recover(streams, self.handle_entry)
        self._discard_overflow()
        return handled + self.recovery.read_new(streams, self.handle_entry, count, block_ms)

    def handle_entry(self, stream: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> bool:
        """Check one manifest and route its rows, or dead-letter it; either way it is acknowledged."""
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        collector, output = self.keys.stream_parts(stream)
        nbytes = _entry_bytes(fields)
        meta = SetMeta.read(fields.get(_META, b""))  # once per entry: the check and any cleanup read it
        if nbytes > self.schema.max_manifest_bytes:  # before any decoding that scales with it
            self.dead_letter(stream, entry, f"manifest of {nbytes} bytes exceeds the "
                             f"{self.schema.max_manifest_bytes} this config's sets can need", nbytes, fields, meta)
            return False
        try:
            view = EntryView.of_manifest(fields, meta)
            head = check_entry(view, self.schema, self.outputs, self.max_bytes)
            if head.output != output:
                raise SampleError(f"set for output {head.output!r} arrived on the {output!r} stream")
            if head.collector != collector:  # a set is credited to the stream's owner, never another
                raise SampleError(f"set of collector {head.collector!r} arrived on {collector!r}'s stream")
        except (CodecError, SampleError) as exc:
            self.dead_letter(stream, entry, str(exc), nbytes, fields, meta)
            return False
        except Exception as exc:  # a case the checks did not foresee: this entry must not become a poison pill
            log.exception("entry_check_failed", stream=stream, entry=entry)
            self.dead_letter(stream, entry, f"unexpected {type(exc).__name__} while checking: {exc}",
                             nbytes, fields, meta)
            return False
        # the rows were made by the collector and are checked against their heads inside
        # Redis; ids from the set, not the entry: a set published twice cannot duplicate samples
        heads = [view.heads[row_field(i)] for i in range(head.n)]
        bad = self.buffers.route_set(output, stream, SERVER_GROUP, entry, collector, head.set_id, heads,
                                     copy=self._recorded(stream))
        if bad is not None:
            self.dead_letter(stream, entry, bad, view.nbytes, fields, meta)
            return False
        self.stats.routed_sets += 1
        self.stats.routed_samples += head.n
        return True

    def _recorded(self, stream: str) -> bool:
        """True while a recorder group reads the stream: rows are then copied, and the
        recorder deletes the incoming ones once they are on disk."""
        now = time.monotonic()
        checked, recorded = self._recorder.get(stream, (-math.inf, False))
        if now - checked > RECORDER_CHECK_S:
            names = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                     for g in self.r.xinfo_groups(stream)}
            recorded = RECORDER_GROUP in names
            self._recorder[stream] = (now, recorded)
        return recorded

    def drop_incoming(self, stream: str, fields: dict[bytes, bytes], meta: SetMeta | None = None) -> None:
        """Delete the rows of a set that will never be routed (their TTL would, later);
        `meta` when the entry's meta is decoded already."""
        set_id = (meta if meta is not None else SetMeta.read(fields.get(_META, b""))).set_id
        rows = sum(1 for name in fields if name != _META)
        if set_id is not None and rows:
            collector = self.keys.stream_parts(stream)[0]
            self.r.unlink(*(self.keys.incoming(collector, set_id, i) for i in range(rows)))

    def dead_letter(self, stream: str, entry: str, reason: str, nbytes: int, fields: dict[bytes, bytes],
                    meta: SetMeta | None = None) -> None:
        """Keep a bounded record of a rejected entry, acknowledge it and delete its rows."""
        log.warning("entry_rejected", stream=stream, entry=entry, reason=reason)
        self.drop_incoming(stream, fields, meta)
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(
            self.keys.deadletter,
            {"stream": stream, "entry": entry, "reason": reason[:500], "bytes": nbytes, "at": time.time()},
            maxlen=DEADLETTER_MAXLEN,
            approximate=True,
        )
        pipe.xack(stream, SERVER_GROUP, entry)
        pipe.hincrby(self.keys.counters, Counter.DEADLETTERED, 1)
        pipe.execute()
        self.stats.rejected += 1

    def stream_lag(self, stream: str) -> int:
        """Entries in a stream that the server group has not read yet."""
        for group in self.r.xinfo_groups(stream):
            if group["name"] in (SERVER_GROUP, SERVER_GROUP.encode()):
                lag = group.get("lag")
                if lag is not None:
                    return int(lag)
                last = group["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else last
                return len(self.r.xrange(stream, min=f"({last}", max="+", count=100_000))
        return 0

    def _discard_overflow(self) -> None:
        """Bound memory when the server falls behind its streams: drop the oldest unread sets, counted."""
        limit = self.config.buffers.stream_maxlen
        for stream in sorted(self.streams.known):
            excess = self.stream_lag(stream) - limit
            if excess <= 0:
                continue
            name = self.keys.stream_parts(stream)[1]
            resp = self.r.xreadgroup(SERVER_GROUP, self.consumer, {stream: ">"}, count=excess)
            entries = resp[0][1] if resp else []
            ids = [i for i, _ in entries]
            for _, fields in entries:
                self.drop_incoming(stream, fields)
            if ids:
                pipe = self.r.pipeline(transaction=True)
                pipe.xack(stream, SERVER_GROUP, *ids)
                pipe.hincrby(self.keys.counters, Counter.sets_dropped(name), len(ids))
                pipe.execute()
                self.stats.dropped += len(ids)
                log.info("stream_overflow_dropped", stream=stream, output=name, sets=len(ids))

    def trim_streams(self) -> None:
        """Delete routed sets beyond `stream_keep`: streams are transport, buffers are the pool."""
        keep = self.config.buffers.stream_keep
        for stream in sorted(self.streams.known):
            self.r.xtrim(stream, maxlen=self.stream_lag(stream) + keep, approximate=True)

    def forget_departed(self, live: set[str], idle_s: float = DEPARTED_IDLE_S) -> int:
        """Delete the streams of collectors no longer live, silent for `idle_s`, whose every
        group has read and acknowledged everything (under `make run` each restarted collector
        has a new id, so new streams); a collector that comes back only makes its stream
        anew. Returns how many."""
        gone = 0
        seconds, micros = self.r.time()
        now_ms = seconds * 1000 + micros // 1000
        for stream in sorted(self.streams.known):
            if self.keys.stream_parts(stream)[0] in live:
                continue
            last = self.r.xinfo_stream(stream)["last-generated-id"]
            last_ms = int((last.decode() if isinstance(last, bytes) else last).split("-")[0])
            if now_ms - last_ms < idle_s * 1000:
                continue
            groups = self.r.xinfo_groups(stream)
            if all(int(g["pending"]) == 0 and g.get("lag") == 0 for g in groups):
                self.r.delete(stream)
                self.streams.known.discard(stream)
                gone += 1
        return gone

    def max_lag(self) -> int:
        """The largest unread backlog of any of the shard's streams."""
        return max((self.stream_lag(s) for s in self.streams.known), default=0)
