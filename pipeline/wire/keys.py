"""Every Redis key, stream, channel and queue name Charles uses, built in one place.

Nothing else in the code base formats a key string: ask a `Keys` object. One prefix
(default `charles:`), one style: `prefix + part:part`.

Shards. The sample path (streams, incoming rows, buffers, the replay hash, draws, counters,
dead letters) is split into `[redis] shards` pipeline shards; every key of one shard carries
its hash tag (`charles:{s1.1}:buffer:steering`), so a shard's multi-key scripts and
transactions stay in one Redis Cluster slot. `Keys.shards(n)` gives one `Keys` per shard.
On a plain redis-server with one shard the keys keep their untagged names (`charles:buffer:
steering`): a laptop's data, tests and `redis-cli` habits stay as they were. On a cluster
(`Keys.cluster`) the other keys (config, weights, presence, status, ...) share the tag
`{global}`, so each of their transactions stays in one slot too.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

DEFAULT_PREFIX = "charles:"
#: hash tag of every key outside the shards, on a cluster
GLOBAL_TAG = "global"

#: rq queue name (rq adds its own `rq:queue:` prefix; we add ours in front of the name).
EVALUATE_QUEUE = "evaluate"

#: Consumer groups on the sample streams.
SERVER_GROUP = "server"
RECORDER_GROUP = "recorder"


class Counter:
    """Field names of the `Keys.counters` hash, so writers and readers cannot drift apart."""

    DEADLETTERED = "deadlettered"
    RECORDER_REJECTED = "recorder_rejected"

    @staticmethod
    def sets_routed(output: str) -> str:
        return f"sets_routed:{output}"

    @staticmethod
    def samples_routed(output: str) -> str:
        return f"samples_routed:{output}"

    @staticmethod
    def sets_dropped(output: str) -> str:
        """Sets trimmed from a full stream before any server read them."""
        return f"sets_dropped:{output}"

    @staticmethod
    def recorded_sets(output: str) -> str:
        return f"recorded_sets:{output}"

    @staticmethod
    def recorded_samples(output: str) -> str:
        return f"recorded_samples:{output}"


#: Every key and channel of rq.
RQ_ALL = "rq:*"


@lru_cache(maxsize=1024)
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of shard `shard` of `shards`: `s{shard}`, with the first suffix that
    puts its slot in the shard-th of `shards` equal slot ranges. A cluster made with as
    many masters as shards (redis-cli's even split) then gives every shard a node of its
    own; plain `s0`, `s1`, `s2` would put two of three on one node."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}")
    low, high = shard * REDIS_CLUSTER_HASH_SLOTS // shards, (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    for n in itertools.count():
        tag = f"s{shard}" if n == 0 else f"s{shard}.{n}"
        if low <= key_slot(tag.encode()) < high:
            return tag
    raise AssertionError("unreachable")


def sample_id(collector: str, set_id: str, row: int) -> str:
    """A sample's id in a buffer (the routing script builds the same): the collector's name
    first, so no two collectors' ids can collide and eviction finds the owner."""
    return f"{collector}/{set_id}:{row}"


def set_of_sample(sample_id: bytes | str) -> str:
    """The set id part of a `sample_id`."""
    name = sample_id.decode() if isinstance(sample_id, bytes) else sample_id
    return name.rpartition("/")[2].rpartition(":")[0]


def shard_of(collector: str, shards: int) -> int:
    """The shard a collector publishes to: a stable hash of its id (blake2b, not Python's
    salted `hash`, so every process and restart agrees). No coordination, and even over
    many collectors; with few, a shard may get none (draws then take from the others)."""
    digest = hashlib.blake2b(collector.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; tests use a unique prefix each. `cluster`: the keys
    live on a Redis Cluster (see the module docstring); `shard`: the hash tag of the
    pipeline shard whose sample keys this object names ("" = the untagged single shard)."""

    prefix: str = DEFAULT_PREFIX
    cluster: bool = False
    shard: str = ""

    def _k(self, *parts: str) -> str:
        """A key outside the shards."""
        return self.prefix + (f"{{{GLOBAL_TAG}}}:" if self.cluster else "") + ":".join(parts)

    def _s(self, *parts: str) -> str:
        """A key of this object's shard."""
        return self.prefix + (f"{{{self.shard}}}:" if self.shard else "") + ":".join(parts)

    def shards(self, count: int) -> list[Keys]:
        """One `Keys` per pipeline shard; a single shard on a plain Redis keeps today's names."""
        if count == 1 and not self.cluster:
            return [replace(self, shard="")]
        return [replace(self, shard=shard_tag(i, count)) for i in range(count)]

    def for_collector(self, collector: str, count: int) -> Keys:
        """The keys of the shard collector `collector` publishes to, of `count` shards."""
        return self.shards(count)[shard_of(collector, count)]

    def family(self, *parts: str) -> str:
        """Glob of every key under `parts` (`family("buffer")` = `<prefix>buffer:*`), for ACLs."""
        return self._k(*parts, "*")

    def shard_family(self, *parts: str) -> list[str]:
        """Globs of every sample key under `parts`, untagged and in any shard, for ACLs."""
        return [self.prefix + ":".join((*parts, "*")), self.prefix + "{*}:" + ":".join((*parts, "*"))]

    @property
    def everything(self) -> str:
        """Glob of every key under this prefix."""
        return self.prefix + "*"

    # -- config -------------------------------------------------------------------
    @property
    def config(self) -> str:
        """Hash: `json` (the active run config) and `version`."""
        return self._k("config")

    # -- samples ------------------------------------------------------------------
    def stream(self, output: str, collector: str) -> str:
        """Stream of one collector's sample-set manifests for one output (transport; rows in
        `incoming`). A stream per collector: a machine can trim or block only its own."""
        return self._s("stream", collector, output)

    def streams_of(self, collector: str) -> str:
        """Glob of one collector's sample streams in this shard (the server's scan)."""
        return self._s("stream", collector, "*")

    def stream_parts(self, stream: bytes | str) -> tuple[str, str]:
        """(collector, output) of a `stream(output, collector)` key of this shard (XREADGROUP
        replies name the key)."""
        name = stream.decode() if isinstance(stream, bytes) else stream
        collector, _, output = name[len(self._s("stream", "")) :].partition(":")
        return collector, output

    def incoming(self, collector: str, set_id: str, row: int | str = "") -> str:
        """String: one row of a set a collector published, until the server checks it and
        renames it into a buffer (it has a TTL: a set never routed cannot leak). Under the
        collector's name: no machine can read or rewrite another's rows."""
        return self._s("incoming", collector, set_id, str(row))

    def sharded(self, *parts: str) -> list[str]:
        """A shard key or glob (`sharded("buffer", "*")`) untagged and under any shard's tag,
        for ACLs that must hold on a plain Redis and on a cluster."""
        name = ":".join(parts)
        return [self.prefix + name, self.prefix + "{*}:" + name]

    def collector_family(self, family: str, collector: str) -> list[str]:
        """Globs of one collector's `stream` or `incoming` keys in any shard, untagged or
        tagged (its ACL's); `collector` "*": every collector's."""
        return [self.prefix + f"{family}:{collector}:*", self.prefix + f"{{*}}:{family}:{collector}:*"]

    def jobs(self, collector: str) -> str:
        """List of episode specs (JSON) the server hands one collector; only it may pop them."""
        return self._k("jobs", collector)

    def buffer(self, output: str) -> str:
        """Set of sample ids in one output's buffer (SCARD = fill; SPOP/SRANDMEMBER = random draw)."""
        return self._s("buffer", output)

    def buffer_row(self, output: str, sample_id: str) -> str:
        """String: one encoded sample of `buffer(output)` (a key per row, so a draw can
        rename it without the row passing through Lua)."""
        return self._s("buffer", output, "row", sample_id)

    def buffer_row_prefix(self, output: str) -> str:
        return self.buffer_row(output, "")

    def buffer_order(self, output: str) -> str:
        """Sorted set of a buffer's sample ids by insert time: the oldest are evicted first."""
        return self._s("buffer", output, "order")

    def buffer_owned(self, output: str, collector: str) -> str:
        """Sorted set of the ids in `buffer(output)` that one collector sent, by insert time:
        over its quota, its own oldest leave first (no collector can crowd out the others)."""
        return self._s("buffer", output, "owned", collector)

    def buffer_replay(self, output: str) -> str:
        """Hash of a buffer's replay limit (`pipeline.serve.replay`): `tokens` (draws banked) and
        the `inserted`, `drawn` and `evicted` totals."""
        return self._s("buffer", output, "replay")

    def drawn(self, token: str) -> str:
        """Key prefix for the rows of one draw, kept (with a TTL) until that trainer fetched them."""
        return self._s("drawn", token, "")

    @property
    def deadletter(self) -> str:
        """Stream of rejected entries, each with its source and reason."""
        return self._s("deadletter")

    # -- counters and status ------------------------------------------------------
    @property
    def counters(self) -> str:
        """Hash of monotonically increasing counters (sets routed, dropped, dead-lettered...),
        one per shard: the routing script writes it with the shard's buffers."""
        return self._s("counters")

    def status(self, role: str, worker_id: str | None = None) -> str:
        """Hash a console reads: `status:server`, `status:trainer`, `status:player:{id}`."""
        return self._k("status", role) if worker_id is None else self._k("status", role, worker_id)

    def status_pattern(self, role: str) -> str:
        return self._k("status", role, "*")

    def presence(self, role: str, worker_id: str) -> str:
        """String with a TTL, refreshed by the worker's heartbeat."""
        return self._k("worker", role, worker_id)

    def presence_pattern(self, role: str = "*") -> str:
        return self._k("worker", role, "*")

    # -- weights ------------------------------------------------------------------
    @property
    def weights_latest(self) -> str:
        """Hash: `blob` (safetensors), `version`, `sha256`, `model`, `created`, `batches`."""
        return self._k("weights", "latest")

    def weights_version_blob(self, version: int) -> str:
        """Hash like `weights_latest`, kept for a published version the evaluator scores."""
        return self._k("weights", "v", str(version))

    @property
    def weights_best(self) -> str:
        """Hash: the version with the best evaluation and its scores."""
        return self._k("weights", "best")

    @property
    def weights_version_counter(self) -> str:
        """INCR counter that hands out monotonically increasing weight versions."""
        return self._k("weights", "version")

    @property
    def weights_channel(self) -> str:
        """Pub/sub channel with `{version, sha256, model}` notifications (never the blob)."""
        return self._k("weights")

    # -- evaluation ---------------------------------------------------------------
    @property
    def evaluation(self) -> str:
        """Hash version -> JSON of that version's driving scores."""
        return self._k("evaluation")

    @property
    def evaluation_reference(self) -> str:
        """Hash reference key -> JSON scores of the NPC and the baseline (same for every version)."""
        return self._k("evaluation", "reference")

    # -- live view ----------------------------------------------------------------
    def frame(self, worker_id: str, camera: str) -> str:
        """String: latest JPEG of one camera of one player (cinematic, hood, convcam)."""
        return self._k("frame", worker_id, camera)

    def viewer(self, worker_id: str) -> str:
        """String with a short TTL a dashboard refreshes while it shows this player.

        LiveView encodes frames only while it exists, so an unwatched player spends nothing
        on JPEGs; it lives under `frame:` so the player's ACL (`~frame:*`) already covers it.
        """
        return self._k("frame", worker_id, "viewer")

    @property
    def loss_history(self) -> str:
        """List of recent `{batch, loss}` JSON points for the dashboard's loss curve."""
        return self._k("trainer", "loss")

    # -- rq ------------------------------------------------------------------------
    def queue(self, name: str) -> str:
        """rq queue name under our prefix, so several Charles runs can share one Redis."""
        return self._k(name)

    def job_id(self, queue: str, suffix: str) -> str:
        """An rq job id naming its run and queue, so an ACL can scope a role to one queue's jobs.

        rq job ids allow [A-Za-z0-9_-] only; `job_id(q, "")` is the prefix of all of them.
        """
        return re.sub(r"[^A-Za-z0-9_-]", "-", self.prefix).strip("-") + f"-{queue}-{suffix}"
