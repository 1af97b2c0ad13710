"""The server: publishes the config, routes sample sets into buffers, supplies collection jobs.

Routing is at-least-once from the stream and exactly-once into the buffer: every entry
is a manifest (the set's meta and each row's head), checked here; the rows themselves,
finished buffer rows the collector wrote as `incoming` keys, never reach the server:
one script in Redis compares each with its checked head and renames it into the buffer,
with the XACK and the counters (`Buffers.route_set`). A bad entry is
dead-lettered with its reason and acknowledged, never retried forever. Entries left
pending by a crashed server are reclaimed (its own on start, others' with XAUTOCLAIM).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from rq import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from pipeline.config import CollectionConfig, Config
from pipeline.errors import CodecError, ConfigError, SampleError
from pipeline.games.base import NAMED_FIELDS, Capabilities, Environment, capabilities_of
from pipeline.serve.buffers import Buffers
from pipeline.wire.config_store import publish_config
from pipeline.wire.consumer_group import PendingRecovery
from pipeline.wire.keys import COLLECT_QUEUE, RECORDER_GROUP, SERVER_GROUP, Counter, Keys
from pipeline.wire.manifest import META_FIELD, EntryView, SetMeta, check_entry, row_field
from pipeline.wire.presence import Presence, live_workers
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff
from pipeline.wire.schema import SampleSchema

log = structlog.get_logger(__name__)
DEADLETTER_MAXLEN = 1000
_META = META_FIELD.encode()
RECORDER_CHECK_S = 10.0
COLLECT_JOB = "pipeline.collect.episode.Collector.run_episode"


#: What the collection config chooses for each Environment field a backend may vary.
_CHOSEN: dict[str, str] = {"map_seed": "map_seeds", "weather": "weathers", "time_of_day": "time_of_day",
                           "car": "cars", "traffic_density": "traffic_density"}


def check_environment(cfg: CollectionConfig, capabilities: Capabilities) -> Capabilities:
    """Refuse collection choices outside the values the backend declares (a car it lacks, an
    hour past its range); choices for fields it does not vary are ignored, never sampled."""
    problems = []
    for name, option in _CHOSEN.items():
        declared = capabilities.environment.get(name, ())
        if not declared:
            continue
        chosen = getattr(cfg, option)
        if name in NAMED_FIELDS:
            outside = sorted(set(chosen) - set(declared))
            if outside:
                problems.append(f"collection.{option}: {outside} not among the backend's {list(declared)}")
        elif not declared[0] <= chosen[0] <= chosen[1] <= declared[1]:
            problems.append(f"collection.{option}: {list(chosen)} outside the backend's range {list(declared)}")
    if problems:
        raise ConfigError("; ".join(problems))
    return capabilities


def sample_environment(cfg: CollectionConfig, rng: random.Random, capabilities: Capabilities) -> Environment:
    """A random training environment, varying only the fields the backend declares (the others
    keep Environment's defaults); held-out seeds can never come out of here."""
    varies = capabilities.varies
    fields: dict[str, Any] = {}
    if varies("map_seed"):
        seed = rng.randint(*cfg.map_seeds)
        while seed in cfg.held_out_seeds:  # defensive: the schema already forbids the overlap
            seed = rng.randint(*cfg.map_seeds)
        fields["map_seed"] = seed
    if varies("time_of_day"):
        if rng.random() < cfg.night_fraction:
            hour = rng.choice([rng.uniform(0.0, 5.0), rng.uniform(21.0, 24.0)])
        else:
            hour = rng.uniform(*cfg.time_of_day)
        fields["time_of_day"] = round(hour, 2)
    if varies("weather"):
        fields["weather"] = rng.choice(cfg.weathers)
    if varies("car"):
        fields["car"] = rng.choice(cfg.cars)
    if varies("traffic_density"):
        fields["traffic_density"] = round(rng.uniform(*cfg.traffic_density), 3)
    fields["episode_seed"] = rng.randrange(2**31)  # every backend: the seed of its episode's randomness
    if varies("npc_style"):  # "normal" twice as often as each other style
        styles = capabilities.environment["npc_style"]
        fields["npc_style"] = rng.choice([s for s in styles for _ in range(2 if s == "normal" else 1)])
    return Environment(**fields)


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


class Server:
    """One server process's work, step by step; `workers/server.py` runs the loop."""

    def __init__(self, r: redis.Redis, keys: Keys, config: Config, consumer: str = "server-1", seed: int | None = None) -> None:
        self.r = r
        self.keys = keys
        self.config = config
        self.consumer = consumer
        self.outputs = config.output_names()
        self.schema = SampleSchema.from_config(config)
        self.max_bytes = int(config.buffers.max_message_mb * 1024 * 1024)
        self.buffers = Buffers(r, keys, self.outputs, config.buffers.capacity, config.buffers.start_fraction,
                               config.replay_limit())
        self.queue = Queue(keys.queue(COLLECT_QUEUE), connection=r, serializer=JSONSerializer)
        self.rng = random.Random(seed)
        # what the backend varies between episodes (its class is imported: the server needs the plug-in)
        self.capabilities = check_environment(config.collection,
                                              capabilities_of(config.game.backend, config.game.options))
        self.stats = RouteStats()
        self.recovery = PendingRecovery(r, keys, SERVER_GROUP, consumer)
        self._recorder: dict[str, tuple[float, bool]] = {}  # stream -> (checked at, recorder group seen)

    # -- setup ----------------------------------------------------------------------
    def setup(self) -> int:
        """Publish the config and create the consumer groups (idempotent)."""
        version = publish_config(self.r, self.keys, self.config)
        for name in self.outputs:
            try:
                self.r.xgroup_create(self.keys.stream(name), SERVER_GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self.recovery.reset()
        return version

    # -- the loop -------------------------------------------------------------------
    def run(self, stop: threading.Event, presence: Presence, deadline: float | None = None) -> None:
        """Serve until `stop` (or the monotonic `deadline`): route, and once a second supply
        jobs, trim the streams and report. A Redis outage or refusal (OOM past maxmemory) is
        waited out with backoff and the config re-published after it, never fatal."""
        backoff = Backoff()
        ready, last_beat = False, 0.0
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                if not ready:
                    log.info("config_published", version=self.setup())
                    ready = True
                self.route_once(block_ms=200)
                if time.monotonic() - last_beat >= 1.0:
                    self.supply_jobs()
                    self.trim_streams()
                    presence.beat(**self.status())
                    last_beat = time.monotonic()
                backoff.reset()
            except (*CONNECTION_ERRORS, redis.RedisError) as exc:
                ready = False
                delay = backoff.next_delay()
                event = "redis_unavailable" if isinstance(exc, CONNECTION_ERRORS) else "redis_refused"
                log.warning(event, what="server", error=str(exc), retry_in_s=round(delay, 2))
                stop.wait(delay)
        log.info("server_stopped", routed_sets=self.stats.routed_sets, rejected=self.stats.rejected)

    # -- routing ----------------------------------------------------------------------
    def route_once(self, block_ms: int = 500, count: int = 16) -> int:
        """Read and route one round of entries; returns the number of entries handled.

        Full buffers keep reading: routing evicts their oldest samples, so the pool stays fresh."""
        handled = 0
        handled += self.recovery.recover(self.outputs, self.handle_entry)
        self._discard_overflow()
        streams = {self.keys.stream(n): ">" for n in self.outputs}
        resp = self.r.xreadgroup(SERVER_GROUP, self.consumer, streams, count=count, block=block_ms)
        for stream, entries in resp or []:
            output = self.keys.output_of_stream(stream)
            for entry_id, fields in entries:
                self.handle_entry(output, entry_id, fields)
                handled += 1
        return handled

    def handle_entry(self, output: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> bool:
        """Check one manifest and route its rows, or dead-letter it; either way it is acknowledged."""
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        stream = self.keys.stream(output)
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
        bad = self.buffers.route_set(output, stream, SERVER_GROUP, entry, head.set_id, heads, copy=self._recorded(stream))
        if bad is not None:
            self.dead_letter(stream, entry, f"row {bad} is missing or differs from its header (expired?)",
                             view.nbytes, fields, meta)
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

    def drop_incoming(self, fields: dict[bytes, bytes], meta: SetMeta | None = None) -> None:
        """Delete the rows of a set that will never be routed (their TTL would, later);
        `meta` when the entry's meta is decoded already."""
        set_id = (meta if meta is not None else SetMeta.read(fields.get(_META, b""))).set_id
        rows = sum(1 for name in fields if name != _META)
        if set_id is not None and rows:
            self.r.unlink(*(self.keys.incoming(set_id, i) for i in range(rows)))

    def dead_letter(self, stream: str, entry: str, reason: str, nbytes: int, fields: dict[bytes, bytes],
                    meta: SetMeta | None = None) -> None:
        """Keep a bounded record of a rejected entry, acknowledge it and delete its rows."""
        log.warning("entry_rejected", stream=stream, entry=entry, reason=reason)
        self.drop_incoming(fields, meta)
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

    def stream_lag(self, output: str) -> int:
        """Entries in an output's stream that the server group has not read yet."""
        stream = self.keys.stream(output)
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
        for name in self.outputs:
            excess = self.stream_lag(name) - limit
            if excess <= 0:
                continue
            stream = self.keys.stream(name)
            resp = self.r.xreadgroup(SERVER_GROUP, self.consumer, {stream: ">"}, count=excess)
            entries = resp[0][1] if resp else []
            ids = [i for i, _ in entries]
            for _, fields in entries:
                self.drop_incoming(fields)
            if ids:
                pipe = self.r.pipeline(transaction=True)
                pipe.xack(stream, SERVER_GROUP, *ids)
                pipe.hincrby(self.keys.counters, Counter.sets_dropped(name), len(ids))
                pipe.execute()
                self.stats.dropped += len(ids)
                log.info("stream_overflow_dropped", output=name, sets=len(ids))

    def trim_streams(self) -> None:
        """Delete routed sets beyond `stream_keep`: streams are transport, buffers are the pool."""
        keep = self.config.buffers.stream_keep
        for name in self.outputs:
            self.r.xtrim(self.keys.stream(name), maxlen=self.stream_lag(name) + keep, approximate=True)

    # -- collection jobs ----------------------------------------------------------------
    def wants_data(self) -> bool:
        """True while the buffers want data (`Buffers.wants_data`: one is below capacity or
        the trainer spent banked draws) and no stream is already half backed up."""
        half = self.config.buffers.stream_maxlen // 2
        return self.buffers.wants_data() and all(self.stream_lag(n) < half for n in self.outputs)

    def supply_jobs(self) -> int:
        """Keep one queued episode per live collector (plus `jobs_ahead`); returns jobs added."""
        started = StartedJobRegistry(queue=self.queue).count  # also fails jobs of dead collectors (rq cleanup)
        if not self.wants_data():
            return 0
        collectors = live_workers(self.r, self.keys, "collector")
        target = len(collectors) + self.config.collection.jobs_ahead if collectors else 1
        waiting = self.queue.count
        added = 0
        while waiting + started + added < target:
            self.enqueue_episode()
            added += 1
        return added

    def enqueue_episode(self, env: Environment | None = None) -> str:
        cfg = self.config.collection
        spec: dict[str, Any] = {
            "episode": uuid.uuid4().hex[:12],
            "environment": (env or sample_environment(cfg, self.rng, self.capabilities)).to_dict(),
            "episode_s": cfg.episode_s,
        }
        job = self.queue.enqueue_call(
            COLLECT_JOB,
            args=(spec,),
            job_id=self.keys.job_id(COLLECT_QUEUE, spec["episode"]),  # collectors' ACL covers only these
            timeout=int(cfg.job_timeout_s),
            result_ttl=600,
            failure_ttl=24 * 3600,
            description=f"episode {spec['episode']} seed {spec['environment']['map_seed']}",
        )
        return job.id

    # -- status -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        fills, replay = self.buffers.fills(), self.buffers.replay_stats()
        counters = {k.decode(): int(v) for k, v in self.r.hgetall(self.keys.counters).items()}
        return {
            "buffers": json.dumps({n: {"fill": fills[n], "capacity": self.config.buffers.capacity,
                                       **{k: round(v, 1) for k, v in replay[n].items()}} for n in self.outputs}),
            "routed_sets": self.stats.routed_sets,
            "routed_samples": self.stats.routed_samples,
            "rejected": self.stats.rejected,
            "dropped": self.stats.dropped,
            "deadlettered": counters.get(Counter.DEADLETTERED, 0),
            "queue": self.queue.count,
            "config_version": int(self.r.hget(self.keys.config, "version") or 0),
        }
