"""The evaluator's rq job: score one published version closed-loop and record the result.

`EvaluatorJobs.evaluate_version` runs inside `charles evaluator` (an rq SimpleWorker on the
`evaluate` queue, JSON serializer, through its guarded job class). A job that finds a newer version's job still waiting skips itself
("superseded"): on a slow machine the scores then follow the newest model instead of
lagging further behind with every publication. Scores go to Redis (`scoreboard`), to
TensorBoard (`eval/*` in the run's log dir, step = trainer batches) and may move `best`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import redis
import structlog

from pipeline.config import Config
from pipeline.errors import NotReadyError, WeightsError
from pipeline.evaluate.scoreboard import (
    cached_reference,
    enqueue_evaluation,
    move_best,
    newest_waiting,
    record_scores,
    store_reference,
)
from pipeline.games.options import GameCache
from pipeline.wire.keys import Keys

log = structlog.get_logger(__name__)

#: Pooled metrics logged to TensorBoard as `eval/<name>`.
TB_METRICS = ("incidents_per_km", "mean_distance_between_incidents_m", "distance_m", "collisions", "unstucks",
              "mean_abs_lane_offset_m", "progress_per_km", "targets_reached", "mean_speed_mps")


class EvaluatorJobs:
    """One evaluator process: what its jobs reuse (game, episode pool, TensorBoard writers),
    what its heartbeat reports, and the rq job itself (`evaluate_version`)."""

    def __init__(self, r: redis.Redis, keys: Keys, reference_cache: Path | None = None,
                 processes: int | None = None, episodes: int | None = None) -> None:
        self.redis = r
        self.processes = processes  # episodes at once, overriding the config's evaluator.processes
        self.episodes = episodes  # per environment, overriding evaluator.episodes_per_environment
        self.keys = keys
        self.reference_cache = reference_cache  # folder of reference files kept between runs (None: Redis only)
        self.games = GameCache()
        self.pool: Any = None  # EpisodePool when `evaluator.processes` > 1
        self.pool_key: str | None = None
        self.writers: dict[str, Any] = {}
        self.state = "idle"
        self.version = 0
        self.evaluated = 0
        self.skipped = 0
        self.last: dict[str, Any] = {}
        self.stop = threading.Event()

    def pool_for(self, cfg: Config) -> Any:
        """The episode pool for this config (`evaluator.processes` children), kept between jobs."""
        from pipeline.evaluate.pool import EpisodePool

        key = cfg.model_dump_json()
        if self.pool is None or self.pool_key != key:
            if self.pool is not None:
                self.pool.close()
            self.pool = EpisodePool(cfg.to_json(), cfg.evaluator.processes)
            self.pool_key = key
        return self.pool

    def evaluator_for(self, cfg: Config) -> Any:
        """An Evaluator on the in-process game, or on the pool when episodes run in parallel."""
        from pipeline.evaluate.closed_loop import EvalSettings, Evaluator

        settings = EvalSettings.from_config(cfg)
        if settings.processes > 1:
            return Evaluator(None, settings, self.pool_for(cfg))
        return Evaluator(self.games.get(cfg), settings)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        self.games.close()

    def writer(self, cfg: Config) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = str(Path(cfg.run.log_dir) / cfg.run.name)
        if log_dir not in self.writers:
            self.writers[log_dir] = SummaryWriter(log_dir=log_dir, filename_suffix=".evaluator")
        return self.writers[log_dir]

    def references(self, evaluator: Any, cfg: Config) -> dict[str, Any]:
        """The NPC's and the baseline's scores for this plan: from Redis, from this machine's
        reference files, or driven once and kept in both."""
        from pipeline.evaluate.closed_loop import (
            read_reference_file,
            reference_cache_file,
            reference_scores,
            write_reference_file,
        )

        key = evaluator.settings.reference_key(cfg)
        path = reference_cache_file(evaluator.settings, cfg, self.reference_cache)
        kept = read_reference_file(path, key)
        cached = cached_reference(self.redis, self.keys, key)
        if cached is not None:
            if kept is None:  # driven by another evaluator of this run: keep them for the next run too
                write_reference_file(path, cached)
            return cached
        if kept is not None:  # driven by an earlier run on this machine: the same plan and simulator
            store_reference(self.redis, self.keys, key, kept)
            log.info("evaluation_references", key=key, source=str(path))
            return kept
        self.state = "references"
        start = time.monotonic()
        refs = {**reference_scores(evaluator, self.stop), "key": key}
        if self.stop.is_set():
            raise InterruptedError("stopped while driving the references")
        store_reference(self.redis, self.keys, key, refs)
        write_reference_file(path, refs)
        log.info("evaluation_references", key=key, wall_s=round(time.monotonic() - start, 1),
                 npc_mdbi=round(refs["npc"]["metrics"]["mean_distance_between_incidents_m"], 1),
                 baseline_ratio=refs["baseline"]["ratio_to_npc"])
        return refs

    def _skip(self, version: int, reason: str) -> dict[str, Any]:
        self.skipped += 1
        log.info("evaluation_skipped", version=version, reason=reason)
        return {"version": version, "skipped": reason}


    def evaluate_version(self, spec: dict[str, Any]) -> dict[str, Any]:
        """rq job: drive version `spec["version"]` on the held-out plan, record scores, maybe move
        best; skipped when a newer version's job is already waiting."""
        version = int(spec["version"])
        newer = newest_waiting(self.redis, self.keys)
        if newer > version:
            return self._skip(version, f"superseded by v{newer}, still waiting")
        return self.score_version(version, spec.get("sha256"))

    def score_kept(self, since: float) -> list[dict[str, Any]]:
        """Score every version still kept in Redis, published at or after `since`, that has no
        score on this evaluator's plan yet: oldest first, none skipped as superseded. A learning
        curve's history, scored after its run on every core (the live evaluator keeps up with only
        some versions), with more episodes than the live one could afford when `episodes` says so."""
        from pipeline.evaluate.closed_loop import EvalSettings
        from pipeline.wire.weights import WeightsStore

        cfg = self.active_config()
        plan = EvalSettings.from_config(cfg).reference_key(cfg)
        results = []
        for info in WeightsStore(self.redis, self.keys).kept_infos(since):
            if self.stop.is_set():
                break
            if scored_under_another_plan(self.redis.hget(self.keys.evaluation, str(info.version)), plan):
                results.append(self.score_version(info.version, info.sha256))
        return results

    def active_config(self) -> Config:
        """The config the server published, with this evaluator's `processes` and `episodes`."""
        from pipeline.wire.config_store import fetch_config

        fetched = fetch_config(self.redis, self.keys)
        if fetched is None:
            raise NotReadyError("no active config in Redis; is the server running?")
        overrides: dict[str, int] = {}
        if self.processes is not None:
            overrides["processes"] = self.processes
        if self.episodes is not None:
            overrides["episodes_per_environment"] = self.episodes
        cfg = fetched[0]
        return cfg.model_copy(update={"evaluator": cfg.evaluator.model_copy(update=overrides)})

    def score_version(self, version: int, sha256: str | None = None) -> dict[str, Any]:
        """Drive one version (its blob checked against `sha256` when given) and record its scores."""
        from pipeline.evaluate.closed_loop import model_policy, score_policy
        from pipeline.models.loading import build_model_from
        from pipeline.wire.weights import WeightsStore

        r, keys = self.redis, self.keys
        cfg = self.active_config()
        try:
            info, tensors = WeightsStore(r, keys).fetch(version, model=cfg.run.name)
            blob = r.hget(keys.weights_version_blob(version), "blob") or r.hget(keys.weights_best, "blob") or b""
            if info.sha256 != (sha256 or info.sha256) or hashlib.sha256(blob).hexdigest() != info.sha256:
                raise WeightsError("the stored blob is not the one that was published")
            model = build_model_from(cfg, tensors)
        except WeightsError as exc:
            return self._skip(version, str(exc))
        import torch

        torch.set_num_threads(1)
        self.version = version
        evaluator = self.evaluator_for(cfg)
        try:
            refs = self.references(evaluator, cfg)
            self.state = "evaluating"
            scores = score_policy(evaluator, model_policy(model, blob), refs, self.stop)
        except InterruptedError:
            return self._skip(version, "stopped")
        finally:
            self.state = "idle"
        if self.stop.is_set():
            return self._skip(version, "stopped")
        record = {"version": version, "batches": info.batches, "created": info.created, "model": info.model,
                  "evaluated_at": time.time(), "reference": refs["key"], **scores}
        record_scores(r, keys, version, record)
        moved = move_best(r, keys, info, blob, record, cfg.evaluator.rank_by)
        try:
            log_tensorboard(self.writer(cfg), record)
        except OSError as exc:  # a full disk must not lose the Redis record
            log.warning("tensorboard_failed", error=str(exc))
        self.evaluated += 1
        self.last = {"version": version, "ratio_to_npc": record["ratio_to_npc"], "game_score": record["game_score"],
                     "best": moved}
        log.info("version_evaluated", version=version, batches=info.batches, ratio_to_npc=record["ratio_to_npc"],
                 game_score=record["game_score"],
                 incidents_per_km=round(record["metrics"]["incidents_per_km"], 3), best=moved,
                 wall_s=record["wall_s"])
        return {"version": version, "ratio_to_npc": record["ratio_to_npc"], "best": moved}


def scored_under_another_plan(raw_record: bytes | str | None, plan: str) -> bool:
    """True for a version with no score, or one scored on another plan (other episodes, other
    game code: its `reference`); a record that names no plan is kept as it is."""
    if raw_record is None:
        return True
    reference = json.loads(raw_record).get("reference")
    return reference is not None and reference != plan


def log_tensorboard(writer: Any, record: dict[str, Any]) -> None:
    """eval/* scalars at step = trainer batches, stamped with the version's publication time."""
    step, wall = int(record["batches"]), float(record.get("created") or time.time())

    def add(tag: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            writer.add_scalar(tag, float(value), step, walltime=wall)

    add("eval/ratio_to_npc", record.get("ratio_to_npc"))
    add("eval/game_score", record.get("game_score"))
    add("eval/version", record["version"])
    for name in TB_METRICS:
        add(f"eval/{name}", record["metrics"].get(name))
        add(f"eval/npc/{name}", record["npc"].get(name))
    add("eval/baseline/ratio_to_npc", record["baseline"].get("ratio_to_npc"))
    for env, m in record["environments"].items():
        add(f"eval/{env}/ratio_to_npc", m.get("ratio_to_npc"))
        add(f"eval/{env}/incidents_per_km", m.get("incidents_per_km"))
    writer.flush()


def queue_latest_if_missing(r: redis.Redis, keys: Keys) -> int | None:
    """At start: queue the latest version if it has neither a score nor a waiting job."""
    from pipeline.wire.weights import WeightsStore

    info = WeightsStore(r, keys).latest_info()
    if info is None or r.hexists(keys.evaluation, str(info.version)) or newest_waiting(r, keys) >= info.version:
        return None
    enqueue_evaluation(r, keys, info)
    return info.version
