"""Collection episodes: the NPC drives, every tick becomes a labelled sample, balanced sets go out.

With `[collection] model_drives` > 0 (a backend that declares `expert_labels`) the latest
published model drives a share of each episode and the backend's expert labels every tick
(DAgger, `pipeline.collect.dagger`).

`Collector.run_episode` runs one episode the server handed this collector
(`pipeline.collect.handoff`); the work itself is in `EpisodeRunner`, which tests and
benchmarks use on their own. Sample sets are published
by `SetPublisher`, which holds a bounded backlog while Redis is unreachable.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
import structlog

from pipeline.collect.balancing import is_setting_off, make_balancer
from pipeline.collect.bins import build_binnings
from pipeline.collect.context import ContextBuilder
from pipeline.collect.handoff import EpisodeSpec
from pipeline.config import Config
from pipeline.errors import GameError, NotReadyError, WeightsError
from pipeline.games.base import Controls, Environment, Game, Observation, capabilities_of
from pipeline.games.options import GameCache
from pipeline.process import lower_priority
from pipeline.wire.config_store import fetch_config
from pipeline.wire.frames import RAW_CODEC, FrameCodec
from pipeline.wire.keys import Keys
from pipeline.wire.manifest import OutgoingSet, SampleRows, manifest, row_field
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff
from pipeline.wire.schema import ContextSpec

log = structlog.get_logger(__name__)


class SetPublisher:
    """Publish sample sets: the rows as `incoming` keys and the manifest on the output's
    stream, in one MULTI (`keys`: the publishing collector's shard, so on a Redis Cluster the
    MULTI stays in one slot); keep a bounded backlog while Redis is away. Frames are coded
    once, here, with `frame_codec` (the active config's `[buffers] frame_codec`)."""

    def __init__(self, r: redis.Redis, keys: Keys, stream_maxlen: int, max_backlog: int,
                 incoming_ttl_s: int = 3600, frame_codec: FrameCodec = RAW_CODEC) -> None:
        self.r = r
        self.frame_codec = frame_codec
        self.keys = keys
        self.safety_maxlen = stream_maxlen * 2  # the server bounds the unread backlog; this is a net
        self.incoming_ttl_s = incoming_ttl_s
        self.backlog: deque[tuple[OutgoingSet, dict[str, bytes]]] = deque()
        self.max_backlog = max_backlog
        self.published = 0
        self.dropped = 0
        self.backoff = Backoff()
        self._retry_at = 0.0
        self._lock = threading.Lock()  # the episode and the heartbeat thread both flush

    def publish(self, sample_set: OutgoingSet) -> None:
        entry = sample_set.entry(self.frame_codec)
        with self._lock:
            if len(self.backlog) >= self.max_backlog:
                self.backlog.popleft()
                self.dropped += 1
            self.backlog.append((sample_set, entry))
        self.flush()

    def flush(self, force: bool = False) -> bool:
        """Send the backlog in order; on a connection error keep it and retry later (`force`: now)."""
        with self._lock:
            return self._flush(force)

    def _send(self, sample_set: OutgoingSet, entry: dict[str, bytes]) -> bytes:
        """Rows and manifest in one MULTI; returns the manifest's stream entry id."""
        pipe = self.r.pipeline(transaction=True)
        owner = sample_set.collector  # its own keys: the only ones a per-machine ACL user may write
        for i in range(len(sample_set)):
            pipe.set(self.keys.incoming(owner, sample_set.set_id, i), entry[row_field(i)], ex=self.incoming_ttl_s)
        pipe.xadd(self.keys.stream(sample_set.output, owner), manifest(entry), maxlen=self.safety_maxlen,
                  approximate=True)
        return pipe.execute()[-1]

    def _flush(self, force: bool) -> bool:
        if not self.backlog or (time.monotonic() < self._retry_at and not force):
            return not self.backlog
        try:
            while self.backlog:
                sample_set, entry = self.backlog[0]
                self._send(sample_set, entry)
                self.backlog.popleft()
                self.published += 1
            self.backoff.reset()
            return True
        except CONNECTION_ERRORS as exc:
            delay = self.backoff.next_delay()
            self._retry_at = time.monotonic() + delay
            log.warning("publish_deferred", backlog=len(self.backlog), dropped=self.dropped, error=str(exc),
                        retry_in_s=round(delay, 2))
            return False


@dataclass
class EpisodeSummary:
    episode: str
    ticks: int = 0
    samples: int = 0
    sets: dict[str, int] = field(default_factory=dict)
    km: float = 0.0
    collisions: int = 0
    wall_s: float = 0.0
    model_ticks: int = 0  # ticks the `drive` policy drove (DAgger); the NPC drove the rest
    model_version: int = 0  # the weights version that drove them (0: the NPC alone)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _label(obs: Observation) -> np.ndarray:
    """The expert's command for this tick: while the NPC is deliberately perturbed, the
    applied controls are the mistake and `info["expert"]` the correction we want learned."""
    expert = obs.info.get("expert")
    if expert is not None:
        return np.clip(np.asarray(expert, dtype=np.float32), -1.0, 1.0)
    return obs.controls.as_array()


def offers(row: dict[str, np.ndarray], skip_standing: bool, setting_off_repeat: int) -> int:
    """How often a tick is offered to the balancer. With speed as an input, ticks standing
    still while the NPC waits teach "standing -> stay standing" and the model never sets off
    (a stop-and-go copycat): they are left out, and setting off, rare, is offered again."""
    speed, throttle = abs(float(row["speed"])), float(row["targets"][0])
    if skip_standing and speed < 0.5 and throttle <= 0.05:
        return 0
    if is_setting_off(row):
        return setting_off_repeat
    return 1


class EpisodeRunner:
    """Runs episodes on one game: the NPC drives, samples are labelled, balanced and published."""

    def __init__(
        self,
        game: Game,
        context: ContextSpec,
        make_balancer: Callable[[], Any],
        publish: Callable[[OutgoingSet], None],
        collector_id: str,
        sample_every: int = 1,
        skip_standing: bool = False,
        setting_off_repeat: int = 1,
    ) -> None:
        self.game = game
        self.context = context
        self.make_balancer = make_balancer
        self.skip_standing = skip_standing
        self.setting_off_repeat = setting_off_repeat
        self.publish = publish
        self.collector_id = collector_id
        self.sample_every = sample_every

    def run(
        self,
        env: Environment,
        episode_s: float,
        episode: str,
        stop: threading.Event | None = None,
        on_tick: Callable[[EpisodeSummary], None] | None = None,
        drive: Callable[[ContextBuilder, Observation], Controls | None] | None = None,
        policy_version: int = 0,
    ) -> EpisodeSummary:
        """Drive one episode of `episode_s` game seconds and publish every completed set.

        `drive` picks each tick's controls from the context and the last observation (None: the
        NPC drives); the game must then label those ticks with its expert (`info["expert"]`,
        DAgger), else GameError: the model's own commands never become its targets.
        Samples of ticks `drive` steered carry `policy_version` (the weights version behind it).
        """
        start = time.monotonic()
        summary = EpisodeSummary(episode=episode)
        builder = ContextBuilder(self.context)
        balancer = self.make_balancer()
        env_dict = env.to_dict()
        lag = 1 + self.context.label_shift
        obs = self.game.reset(env)
        builder.push(obs)
        ticks = int(episode_s * self.game.fps)
        for tick in range(ticks):
            if stop is not None and stop.is_set():
                break
            controls = drive(builder, obs) if drive is not None else None
            if controls is not None:
                summary.model_ticks += 1
            obs = self.game.step(controls)
            if controls is not None and obs.info.get("expert") is None:
                raise GameError(f"{type(self.game).__name__} gave no info['expert'] for a tick the model drove: "
                                "DAgger needs a game built with expert_labels=True that labels every tick")
            if obs.info.get("respawned"):
                builder.reset()
            builder.push(obs)
            summary.ticks += 1
            if tick % self.sample_every == 0 and builder.ready(lag):
                row = builder.context(lag)
                row["targets"] = _label(obs)
                row["captured_at"] = time.time()
                row["policy_version"] = policy_version if controls is not None else 0
                summary.samples += 1
                for _ in range(offers(row, self.skip_standing, self.setting_off_repeat)):
                    for output, rows in balancer.add(row):
                        self._send(output, rows, episode, env_dict, summary)
            if on_tick is not None and tick % 300 == 0:
                on_tick(summary)
        for output, rows in balancer.flush():
            self._send(output, rows, episode, env_dict, summary)
        summary.km = obs.odometer / 1000
        summary.collisions = obs.collisions
        summary.wall_s = round(time.monotonic() - start, 3)
        return summary

    def _send(self, output: str, rows: list[dict[str, np.ndarray]], episode: str, env: dict[str, Any],
              summary: EpisodeSummary) -> None:
        if not rows:
            return
        self.publish(SampleRows(output, self.collector_id, episode, rows, env))  # rows, not columns: see SampleRows
        summary.sets[output] = summary.sets.get(output, 0) + 1


class Collector:
    """One collector process: what its episodes reuse (game, DAgger model, publisher), what
    its heartbeat reports, and the episode itself (`run_episode`)."""

    def __init__(self, r: redis.Redis, keys: Keys, collector_id: str) -> None:
        self.games = GameCache()
        self.model: Any = None  # DAgger: the latest weights' model, built on the CPU ...
        self.model_version = 0  # ... and its version (0: none yet)
        self.model_key = ""  # the config the model was built for
        self.model_ticks = 0  # ticks a model drove, over all episodes
        self.nice = os.getpriority(os.PRIO_PROCESS, os.getpid())  # its CPU priority (`yield_cpu_once_trained`)
        self.state = "idle"
        self.episode: str | None = None
        self.episodes_done = 0
        self.samples = 0
        self.publisher: SetPublisher | None = None
        self.redis = r
        self.collector_id = collector_id
        self.keys = keys

    def game_for(self, cfg: Config) -> Game:
        """The episode's game; under DAgger built with `expert_labels=True`, so its expert labels
        every tick someone else drives (the config check refused a backend that declares none)."""
        if cfg.collection.model_drives > 0 and capabilities_of(cfg.game.backend, cfg.game.options).expert_labels:
            return self.games.get(cfg, expert_labels=True)
        return self.games.get(cfg)

    def dagger_driver(self, cfg: Config, r: redis.Redis, episode: str) -> Any:
        """A `MixedDriver` with the latest published model (fetched, verified and built only
        when its version changed), or None: the NPC drives alone (no weights yet, or older
        than `model_drives_after_version`, or none could be fetched; logged, never raised)."""
        c = cfg.collection
        if c.model_drives <= 0:
            return None
        from pipeline.collect.dagger import MixedDriver, fetch_latest_model
        from pipeline.wire.weights import WeightsStore

        key = cfg.to_json()  # a new config may build another model: fetch afresh
        if key != self.model_key:
            self.model, self.model_version, self.model_key = None, 0, key
        try:
            info, model = fetch_latest_model(WeightsStore(r, self.keys), cfg, self.model_version)
            if model is not None and info is not None:
                self.model, self.model_version = model, info.version
                log.info("dagger_weights", version=info.version, batches=info.batches)
            elif info is None:
                self.model, self.model_version = None, 0
        except (WeightsError, redis.RedisError) as exc:  # keep the model we have, if any
            log.warning("dagger_weights_unavailable", error=str(exc)[:300], keeping=self.model_version)
        if self.model is None or self.model_version < c.model_drives_after_version:
            log.info("dagger_npc_only", version=self.model_version, after=c.model_drives_after_version)
            return None
        return MixedDriver(self.model, 1.0 - c.model_drives, c.dagger_segment_s, random.Random(episode))

    def yield_cpu_once_trained(self, nice: int) -> None:
        """Lower this process's CPU priority (every thread's) to `nice` once the trainer has published a version.
        Past the buffers' start gate the limiter lets the trainer draw only so much, so every
        cycle a collector takes beyond that is evicted unread, where it shares the cores the
        trainer needs (2-core `make run`: docs/evaluation.md (ah)); before it the collectors
        must fill the buffers, so they keep their start nice until a version exists."""
        if nice <= self.nice:
            return
        from pipeline.wire.weights import WeightsStore

        if WeightsStore(self.redis, self.keys).latest_info() is not None:
            self.nice = lower_priority(nice)
            log.info("collector_yields_cpu", nice=self.nice)

    def run_episode(self, spec: EpisodeSpec, stop: threading.Event | None = None) -> dict[str, Any]:
        """One collection episode with the environment the server chose; `stop` ends it early
        (its sets so far are still published)."""
        r = self.redis
        fetched = fetch_config(r, self.keys)
        if fetched is None:
            raise NotReadyError("no active config in Redis; is the server running?")
        cfg, _version = fetched
        self.yield_cpu_once_trained(cfg.collection.nice_once_trained)

        binnings = build_binnings(cfg.outputs)
        if self.publisher is None:
            self.publisher = SetPublisher(r, self.keys, cfg.buffers.stream_maxlen, cfg.collection.max_backlog_sets,
                                           cfg.buffers.incoming_ttl_s)
        # per episode's config: the frame codec, and this collector's shard of the streams
        self.publisher.frame_codec = FrameCodec(cfg.buffers.frame_codec, cfg.buffers.frame_quality)
        self.publisher.keys = self.keys.for_collector(self.collector_id, cfg.buffers.shards)
        runner = EpisodeRunner(
            game=self.game_for(cfg),
            context=ContextSpec.from_inputs(cfg.inputs, cfg.game.fps),
            make_balancer=lambda: make_balancer(cfg.balancing, binnings),
            publish=self.publisher.publish,
            collector_id=self.collector_id,
            sample_every=cfg.balancing.sample_every,
            skip_standing=cfg.collection.skip_standing,
            setting_off_repeat=cfg.collection.setting_off_repeat,
        )
        driver = self.dagger_driver(cfg, r, spec.episode)
        self.state, self.episode = "collecting", spec.episode
        try:
            version = self.model_version if driver is not None else 0
            summary = runner.run(spec.environment, spec.episode_s, spec.episode, stop=stop, drive=driver,
                                 policy_version=version)
            summary.model_version = version
            # the episode is done when its sets are acknowledged: wait out an outage here
            backoff = Backoff()
            while not self.publisher.flush(force=True) and not (stop is not None and stop.is_set()):
                time.sleep(backoff.next_delay())
        finally:
            self.state, self.episode = "idle", None
        self.episodes_done += 1
        self.samples += summary.samples
        self.model_ticks += summary.model_ticks
        log.info("episode_done", **summary.as_dict(), environment=spec.environment.to_dict(),
                 backlog=len(self.publisher.backlog))
        return summary.as_dict()
