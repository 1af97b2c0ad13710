"""The server: publishes the config, routes sample sets into buffers, supplies collection jobs.

Routing is per pipeline shard (`pipeline.serve.router.ShardRouter`, one per shard this
server serves). One server serves every shard by default, looping over them; at scale
run one per shard (`charles server --shard 2`), each next to its shard's node: routing
is a Lua script per set in Redis plus a check of its manifest here, so one Python
process per shard keeps the routing CPU growing with the shards. The server that serves
shard 0 publishes the config and hands each collector its episodes on its own job list
(`pipeline.collect.handoff`, no rq); the others only route.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

import redis
import structlog

from pipeline.collect.handoff import EpisodeSpec, hand_out
from pipeline.config import CollectionConfig, Config
from pipeline.errors import ConfigError
from pipeline.games.base import NAMED_FIELDS, Capabilities, Environment, capabilities_of
from pipeline.serve.router import RouteStats, ShardRouter
from pipeline.serve.shards import STARVED_WINDOW_S, ShardedBuffers
from pipeline.serve.sweeper import SWEEP_S, sweep
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Counter, Keys
from pipeline.wire.presence import Presence, live_workers
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff
from pipeline.wire.sample_streams import RESCAN_S

log = structlog.get_logger(__name__)
#: how long a round over several shards sleeps when none had anything
IDLE_SLEEP_MS = 10


#: What the collection config chooses for each Environment field a backend may vary.
_CHOSEN: dict[str, str] = {"map_seed": "map_seeds", "weather": "weathers", "time_of_day": "time_of_day",
                           "car": "cars", "traffic_density": "traffic_density", "npc_style": "npc_styles"}


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
    if varies("npc_style"):  # the config's list, or the backend's with "normal" twice as often as each other
        styles = capabilities.environment["npc_style"]
        fields["npc_style"] = rng.choice(cfg.npc_styles or [s for s in styles for _ in range(2 if s == "normal" else 1)])
    return Environment(**fields)


class Server:
    """One server process's work, step by step; `workers/server.py` runs the loop."""

    def __init__(self, r: redis.Redis, keys: Keys, config: Config, consumer: str = "server-1", seed: int | None = None,
                 shards: list[int] | None = None, rescan_s: float = RESCAN_S) -> None:
        """`shards`: the shards this server routes (default: every one of `[buffers] shards`);
        `rescan_s`: how often each router looks for new collectors' streams (tests: 0)."""
        self.r = r
        self.keys = keys
        self.config = config
        self.consumer = consumer
        self.outputs = config.output_names()
        self.buffers = ShardedBuffers.for_config(r, keys, config)
        served = list(range(config.buffers.shards)) if shards is None else shards
        if not served or any(not 0 <= i < config.buffers.shards for i in served):
            raise ConfigError(f"server shards {served}: this run has shards 0..{config.buffers.shards - 1}")
        self._stats = RouteStats()
        self.routers = [ShardRouter(r, self.buffers.shards[i].keys, config, self.buffers.shards[i], consumer,
                                    self._stats, rescan_s) for i in served]
        #: the server of shard 0 publishes the config and hands out the episodes
        self.primary = 0 in served
        self.waiting = 0  # episodes handed out and not yet taken, at the last supply
        self.swept = 0  # keys a remote machine wrote without a TTL or over their cap, deleted
        self.starved_window_s = STARVED_WINDOW_S  # how far back `ShardedBuffers.starved` counts inserts
        self.max_bytes = int(config.buffers.max_message_mb * 1024 * 1024)
        self.rng = random.Random(seed)
        # what the backend varies between episodes (its class is imported: the server needs the plug-in)
        self.capabilities = check_environment(config.collection,
                                              capabilities_of(config.game.backend, config.game.options))

    # -- setup ----------------------------------------------------------------------
    def setup(self) -> int:
        """Publish the config (the primary) and create the consumer groups (idempotent);
        returns the config's version."""
        version = publish_config(self.r, self.keys, self.config) if self.primary else 0
        for router in self.routers:
            router.setup()
        return version

    # -- the loop -------------------------------------------------------------------
    def run(self, stop: threading.Event, presence: Presence, deadline: float | None = None) -> None:
        """Serve until `stop` (or the monotonic `deadline`): route, and once a second supply
        jobs, trim the streams and report; every SWEEP_S delete what remote machines wrote
        against the rules (`pipeline.serve.sweeper`). A Redis outage or refusal (OOM past maxmemory) is
        waited out with backoff and the config re-published after it, never fatal."""
        backoff = Backoff()
        ready, last_beat, last_sweep = False, 0.0, 0.0
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                if not ready:
                    log.info("config_published", version=self.setup())
                    ready = True
                self.route_once(block_ms=200)
                if time.monotonic() - last_beat >= 1.0:
                    collectors = live_workers(self.r, self.keys, "collector")
                    self.buffers.set_live_collectors(collectors)  # every server: the quotas of its shards
                    if self.primary:
                        self.supply_jobs(collectors)
                    self.trim_streams()
                    presence.beat(**self.status())
                    last_beat = time.monotonic()
                if time.monotonic() - last_sweep >= SWEEP_S:
                    self.sweep()
                    last_sweep = time.monotonic()
                backoff.reset()
            except (*CONNECTION_ERRORS, redis.RedisError) as exc:
                ready = False
                event = "redis_unavailable" if isinstance(exc, CONNECTION_ERRORS) else "redis_refused"
                backoff.wait_out(exc, "server", stop, event=event)
        log.info("server_stopped", routed_sets=self.stats.routed_sets, rejected=self.stats.rejected)

    # -- routing ----------------------------------------------------------------------
    @property
    def stats(self) -> RouteStats:
        return self._stats

    def route_once(self, block_ms: int = 500, count: int = 16) -> int:
        """Route one round of every served shard; returns the number of entries handled.
        One shard blocks on its streams up to `block_ms`; several are read without
        blocking (a cluster cannot block on keys of several slots at once) and the round
        sleeps a little when none had anything."""
        if len(self.routers) == 1:
            return self.routers[0].route_once(block_ms=block_ms, count=count)
        handled = sum(router.route_once(block_ms=None, count=count) for router in self.routers)
        if not handled:
            time.sleep(min(block_ms, IDLE_SLEEP_MS) / 1000)
        return handled

    def stream_lag(self, stream: str) -> int:
        """Unread entries of one collector's stream (of any served shard)."""
        return sum(router.stream_lag(stream) for router in self.routers if stream in router.streams.known)

    def trim_streams(self) -> None:
        for router in self.routers:
            router.trim_streams()

    # -- collection jobs ----------------------------------------------------------------
    def wants_data(self) -> bool:
        """True while the buffers want data (`Buffers.wants_data`: one is below capacity or
        the trainer spent banked draws) and no served stream is already half backed up."""
        half = self.config.buffers.stream_maxlen // 2
        return self.buffers.wants_data() and all(router.max_lag() < half for router in self.routers)

    def supply_jobs(self, collectors: list[str] | None = None) -> int:
        """Keep each live collector's own job list at `jobs_ahead` episodes beyond the one it
        runs (an idle one gets at least one) while the buffers want data, and a starved one's
        when they do not (`ShardedBuffers.starved`); returns the episodes handed out. Only
        presence keys a heartbeat wrote count (`live_workers`, or `collectors` when the caller
        just read them): forged ones get no jobs."""
        if collectors is None:
            collectors = live_workers(self.r, self.keys, "collector")
            self.buffers.set_live_collectors(collectors)
        pipe = self.r.pipeline(transaction=False)
        for name in collectors:
            pipe.llen(self.keys.jobs(name))
            pipe.hget(self.keys.status("collector", name), "state")
        replies = pipe.execute() if collectors else []
        waiting = dict(zip(collectors, (int(n) for n in replies[::2]), strict=True))
        self.waiting = sum(waiting.values())
        # no data wanted: only collectors another one's flood keeps from their share
        served = set(collectors) if self.wants_data() else set(self.buffers.starved(collectors, self.starved_window_s))
        ahead, added = self.config.collection.jobs_ahead, 0
        pipe = self.r.pipeline(transaction=False)
        for name, state in zip(collectors, replies[1::2], strict=True):
            if name not in served:
                continue
            target = ahead if state == b"collecting" else max(ahead, 1)
            for _ in range(target - waiting[name]):
                hand_out(pipe, self.keys, name, self.next_episode(), int(self.config.collection.job_timeout_s))
                added += 1
        if added:
            pipe.execute()
            self.waiting += added
        return added

    def sweep(self) -> None:
        """Delete what remote machines wrote against the rules (the primary) and the drained
        streams of collectors that left."""
        if self.primary:
            self.swept += sweep(self.r, self.keys, self.max_bytes)
        live = set(live_workers(self.r, self.keys, "collector"))
        for router in self.routers:
            router.forget_departed(live)

    def next_episode(self, env: Environment | None = None) -> EpisodeSpec:
        """The next episode: a random training environment (never a held-out seed)."""
        cfg = self.config.collection
        return EpisodeSpec(uuid.uuid4().hex[:12], env or sample_environment(cfg, self.rng, self.capabilities),
                           cfg.episode_s)

    # -- status -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        fills, replay = self.buffers.fills(), self.buffers.replay_stats()
        deadlettered = sum(int(self.r.hget(shard.keys.counters, Counter.DEADLETTERED) or 0)
                           for shard in self.buffers.shards)
        return {
            "buffers": json.dumps({n: {"fill": fills[n], "capacity": self.buffers.capacity,
                                       **{k: round(v, 1) for k, v in replay[n].items()}} for n in self.outputs}),
            "shards": json.dumps(self.buffers.shard_status()),
            "served_shards": ",".join(router.keys.shard or "-" for router in self.routers),
            "routed_sets": self.stats.routed_sets,
            "routed_samples": self.stats.routed_samples,
            "rejected": self.stats.rejected,
            "dropped": self.stats.dropped,
            "deadlettered": deadlettered,
            "queue": self.waiting,
            "swept": self.swept,
            "config_version": int(self.r.hget(self.keys.config, "version") or 0),
        }
