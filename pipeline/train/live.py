"""The live trainer: waits for full buffers, draws random batches, trains, publishes weights.

Batches are drawn in a background thread (decode + stack while the model trains); the
draw itself is atomic and gated in Redis, so several trainers may share the buffers.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
import structlog

from pipeline.errors import CharlesError
from pipeline.serve.buffers import FILLING, LIMITED, Buffers
from pipeline.serve.shards import ShardedBuffers
from pipeline.train.distributed import DistributedContext
from pipeline.train.learner import Learner
from pipeline.wire.keys import Keys
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff
from pipeline.wire.schema import SampleSchema
from pipeline.wire.stacking import stack_rows
from pipeline.wire.weights import WeightsInfo, WeightsStore

log = structlog.get_logger(__name__)
LOSS_HISTORY_LEN = 2000
#: What decoding a drawn row may raise: never fatal, the row is dropped and counted (`bad_rows`).
ROW_ERRORS = (CharlesError, ValueError, KeyError, TypeError, IndexError)
#: The smallest batch a training step takes: batch norm needs two values per channel.
MIN_BATCH_ROWS = 2


class BatchDrawer(threading.Thread):
    """Draws and decodes batches ahead of the training step, with each batch's provenance;
    while the buffers are short (`FILLING`) or the replay limit holds it back (`LIMITED`) it
    waits and counts the time."""

    def __init__(self, buffers: Buffers | ShardedBuffers, schema: SampleSchema, batch_size: int,
                 out: queue.Queue[tuple[int, Any, dict[str, np.ndarray]]],
                 stop: threading.Event, prepare: Callable[[dict[str, np.ndarray]], Any] | None = None,
                 name: str = "batch-drawer", alloc: Any = None) -> None:
        super().__init__(name=name, daemon=True)
        self.prepare = prepare
        self.alloc = alloc
        self.buffers = buffers
        self.schema = schema
        self.batch_size = batch_size
        self.stop = stop
        self.batches = out
        self.waiting = True
        self.redis_ok = True
        self.drawn_samples = 0
        self.bad_rows = 0
        self.wait_s = {FILLING: 0.0, LIMITED: 0.0}
        self.last_state = FILLING
        self._held: list[bytes] = []  # good rows too few for a training step: they join the next draw

    def run(self) -> None:
        backoff = Backoff()
        while not self.stop.is_set():
            if self.batches.full():
                time.sleep(0.002)
                continue
            try:
                drawn = self.buffers.draw(self.batch_size)
                self.redis_ok = True
                backoff.reset()
            except CONNECTION_ERRORS as exc:
                self.redis_ok = False
                backoff.wait_out(exc, "draw", self.stop)
                continue
            except redis.RedisError as exc:  # e.g. OOM, or a script refused: wait, never die
                backoff.wait_out(exc, "draw", self.stop, event="draw_refused")
                continue
            # a held row may be drawn again (under replay it stays in its buffer): once a batch
            fresh = [row for rows in drawn.rows.values() for row in rows if row not in self._held]
            self.last_state = drawn.state
            if not fresh:  # below the gate, held back by the replay limit, or empty buffers with a zero gate
                self.waiting = True
                pause = 0.25 if drawn.state == FILLING else 0.02
                if drawn.state in self.wait_s:
                    self.wait_s[drawn.state] += pause
                self.stop.wait(pause)
                continue
            self.waiting = False
            rows, self._held = self._held + fresh, []
            provenance: dict[str, np.ndarray] = {}
            try:
                columns = stack_rows(rows, self.schema, alloc=self.alloc, provenance=provenance)
            except ROW_ERRORS as exc:  # rows were checked on entry; one that still fails costs only itself
                rows = self._without_bad_rows(rows, exc)
                provenance = {}
                columns = stack_rows(rows, self.schema, alloc=self.alloc, provenance=provenance) if rows else {}
            if len(rows) < MIN_BATCH_ROWS:  # batch norm cannot train on one row: it joins the next draw
                self._held = rows
                continue
            self.drawn_samples += len(rows)
            self.batches.put((len(rows), self.prepare(columns) if self.prepare else columns, provenance))


    def _without_bad_rows(self, rows: list[bytes], exc: Exception) -> list[bytes]:
        """The rows that decode and fit the schema on their own; the others counted and logged."""
        good = []
        for row in rows:
            try:
                stack_rows([row], self.schema)
            except ROW_ERRORS:
                self.bad_rows += 1
            else:
                good.append(row)
        log.error("rows_rejected", error=str(exc)[:300], rejected=len(rows) - len(good), kept=len(good))
        return good


class DataAge:
    """What the trainer trains on: its age (now - capture) and policy lag (the version
    being trained - the version that drove), over a window of recent samples, and how long
    a frame takes to reach a published version that trained on it."""

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self._ages: list[np.ndarray] = []
        self._lags: list[np.ndarray] = []
        self._model_share: list[float] = []
        self._since_publish: list[np.ndarray] = []
        self._held = 0  # samples in `_ages`
        self.frame_to_version_s: float | None = None

    def add(self, provenance: dict[str, np.ndarray], version: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        captured, versions = provenance["captured_at"], provenance["policy_version"]
        self._ages.append(now - captured)
        self._lags.append(version - versions[versions > 0])
        self._model_share.append(float((versions > 0).mean()) if len(versions) else 0.0)
        self._since_publish.append(captured)
        self._held += len(captured)
        while self._held > self.window and len(self._ages) > 1:  # keep the newest `window` samples
            self._held -= len(self._ages.pop(0))
            self._lags.pop(0)
            self._model_share.pop(0)

    def published(self, now: float | None = None) -> None:
        """A version went out: the frames it trained on since the last one reached it now."""
        now = time.time() if now is None else now
        if self._since_publish:
            self.frame_to_version_s = float(np.median(now - np.concatenate(self._since_publish)))
        self._since_publish = []

    def stats(self) -> dict[str, float]:
        if not self._ages:
            return {}
        ages = np.concatenate(self._ages)
        lags = np.concatenate(self._lags)
        out = {"data_age_p50_s": float(np.percentile(ages, 50)), "data_age_p95_s": float(np.percentile(ages, 95)),
               "model_driven_share": float(np.mean(self._model_share))}
        if len(lags):
            out["policy_lag_p50"] = float(np.percentile(lags, 50))
            out["policy_lag_p95"] = float(np.percentile(lags, 95))
        if self.frame_to_version_s is not None:
            out["frame_to_version_s"] = self.frame_to_version_s
        return out


@dataclass
class TrainerSettings:
    model_name: str
    batch_size: int
    publish_every: int
    checkpoint_every: int
    log_every: int
    prefetch: int
    checkpoint_dir: Path
    config_sha256: str = ""  # the config trained with: in every blob and checkpoint's metadata


class Trainer:
    """One trainer process's loop; every step is bounded so tests can run it for N batches."""

    def __init__(self, r: redis.Redis, keys: Keys, learner: Learner, buffers: Buffers | ShardedBuffers,
                 schema: SampleSchema,
                 settings: TrainerSettings, weights: WeightsStore, writer: Any | None = None,
                 on_status: Callable[[dict[str, Any]], None] | None = None,
                 on_log: Callable[[int, dict[str, float], dict[str, np.ndarray]], None] | None = None,
                 on_publish: Callable[[WeightsInfo], None] | None = None,
                 dist: DistributedContext | None = None) -> None:
        self.r = r
        self.keys = keys
        self.learner = learner
        # one shard's Buffers, or every shard's: the status reports each shard's gate and limit
        self.buffers = buffers if isinstance(buffers, ShardedBuffers) else ShardedBuffers([buffers])
        self.schema = schema
        self.s = settings
        self.weights = weights
        self.writer = writer
        self.on_status = on_status
        self.on_log = on_log
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.on_publish = on_publish  # e.g. queue the version for evaluation
        self.state = "filling"
        self.samples_per_s = 0.0
        self.batches_per_s = 0.0
        self.last_metrics: dict[str, float] = {}
        self.published_version = learner.last_version
        self.age = DataAge()
        #: seconds the step waited for a batch, and since the first batch (the compute share)
        self.data_wait_s = 0.0
        self.first_batch_at: float | None = None
        self._replay_window: tuple[float, float, float] | None = None  # (time, drawn, inserted)
        self.replay: dict[str, float] = {}
        self.shards: list[dict[str, Any]] = []
        self.draws_per_insert = 0.0

    def run(self, stop: threading.Event, max_batches: int | None = None) -> None:
        drawer_stop = threading.Event()
        ready: queue.Queue[tuple[int, Any, dict[str, np.ndarray]]] = queue.Queue(maxsize=max(1, self.s.prefetch))
        # a GPU outruns one thread of draw + decode + copy; the CPU has no cycles to spare
        n_drawers = 2 if self.learner.device.type == "cuda" else 1
        drawers = [BatchDrawer(self.buffers, self.schema, self.s.batch_size, ready, drawer_stop,
                               prepare=self.learner.prepare, name=f"batch-drawer-{i}", alloc=self.learner.host_alloc)
                   for i in range(n_drawers)]
        for d in drawers:
            d.start()
        trained_here = False
        held: tuple[int, Any, dict[str, np.ndarray]] | None = None
        window_start, window_batches, window_samples = time.monotonic(), 0, 0
        last_status = 0.0
        done = 0
        try:
            while not stop.is_set() and (max_batches is None or done < max_batches):
                if held is None:
                    asked = time.monotonic()
                    try:
                        held = ready.get(timeout=0.25)
                    except queue.Empty:
                        if all(d.waiting for d in drawers):
                            limited = any(d.last_state == LIMITED for d in drawers)
                            self.state = "rate_limited" if limited else "waiting" if trained_here else "filling"
                    if self.first_batch_at is not None:
                        self.data_wait_s += time.monotonic() - asked
                if self.dist is not None and not self.dist.all_ready(held is not None, self.learner.device):
                    continue  # some rank is short of data: everyone waits, batches are kept
                if held is not None:
                    (n_samples, batch, provenance), held = held, None
                    if self.first_batch_at is None:
                        self.first_batch_at = time.monotonic()
                    self.age.add(provenance, self.published_version)
                    self.state, trained_here = "training", True
                    log_now = (self.learner.batches + 1) % self.s.log_every == 0
                    metrics = self.learner.step_tensors(batch, with_metrics=log_now)
                    if metrics:
                        self.last_metrics = metrics
                    done += 1
                    window_batches += 1
                    window_samples += n_samples
                    self._after_batch(metrics, batch)
                now = time.monotonic()
                if now - window_start >= 2.0:
                    self.batches_per_s = window_batches / (now - window_start)
                    self.samples_per_s = window_samples / (now - window_start)
                    window_start, window_batches, window_samples = now, 0, 0
                if now - last_status >= 1.0:
                    self._report(drawers)
                    last_status = now
        finally:
            drawer_stop.set()
            self._report(drawers)

    def _after_batch(self, metrics: dict[str, float], columns: dict[str, Any]) -> None:
        if not self.is_main:  # rank 0 logs, publishes and checkpoints for everyone
            return
        n = self.learner.batches
        if n % self.s.log_every == 0:
            self._log(n, metrics, columns)
        if n % self.s.publish_every == 0:
            self.publish()
        if n % self.s.checkpoint_every == 0:
            self.checkpoint()

    def _log(self, n: int, metrics: dict[str, float], columns: dict[str, Any]) -> None:
        if self.writer is not None:
            for name, value in metrics.items():
                tag = "loss/total" if name == "loss" else name
                self.writer.add_scalar(tag, value, n)
            self.writer.add_scalar("trainer/batches_per_s", self.batches_per_s, n)
            self.writer.add_scalar("trainer/samples_per_s", self.samples_per_s, n)
            share = self.compute_share()
            if share is not None:
                self.writer.add_scalar("trainer/compute_share", share, n)
            for group, values in (("replay", self.replay), ("data", self.age.stats())):
                for name, value in values.items():
                    self.writer.add_scalar(f"{group}/{name}", value, n)
        point = json.dumps({"batch": n, "loss": round(metrics["loss"], 6), "t": round(time.time(), 2)})
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.rpush(self.keys.loss_history, point)
            pipe.ltrim(self.keys.loss_history, -LOSS_HISTORY_LEN, -1)
            pipe.execute()
        except CONNECTION_ERRORS:
            pass
        if self.on_log is not None:
            first = {"frames": columns["frames"][:1].detach().cpu().numpy()}  # one sample, on the host
            self.on_log(n, metrics, first)

    def publish(self) -> int | None:
        """Publish the current weights; on a Redis outage keep training and try next time."""
        try:
            info = self.weights.publish(self.learner.weights(), self.s.model_name, self.learner.batches,
                                        min_version=self.learner.last_version, config_sha256=self.s.config_sha256)
        except CONNECTION_ERRORS as exc:
            log.warning("publish_failed", error=str(exc))
            return None
        self.learner.last_version = info.version
        self.published_version = info.version
        self.age.published()
        log.info("weights_published", version=info.version, batches=info.batches, bytes=None)
        if self.on_publish is not None:
            try:
                self.on_publish(info)
            except CONNECTION_ERRORS as exc:
                log.warning("on_publish_failed", version=info.version, error=str(exc))
        return info.version

    def checkpoint(self) -> None:
        self.learner.save_checkpoint(self.s.checkpoint_dir, {"model": self.s.model_name,
                                                             "config_sha256": self.s.config_sha256})
        log.info("checkpoint_saved", folder=str(self.s.checkpoint_dir), batches=self.learner.batches)

    def compute_share(self) -> float | None:
        """Share of wall time since the first batch that the step did not wait for data."""
        if self.first_batch_at is None:
            return None
        wall = time.monotonic() - self.first_batch_at
        return max(0.0, 1.0 - self.data_wait_s / wall) if wall > 0 else None

    def _replay_status(self) -> dict[str, float]:
        """Draws per insert over all outputs: over the last 10 s window and in total."""
        stats = self.buffers.replay_stats().values()
        drawn, inserted = sum(s["drawn"] for s in stats), sum(s["inserted"] for s in stats)
        now = time.monotonic()
        if self._replay_window is None:
            self._replay_window = (now, drawn, inserted)
        then, drawn0, inserted0 = self._replay_window
        if now - then >= 10.0:
            self.draws_per_insert = (drawn - drawn0) / (inserted - inserted0) if inserted > inserted0 else 0.0
            self._replay_window = (now, drawn, inserted)
        return {"draws_per_insert": self.draws_per_insert,
                "draws_per_insert_total": drawn / inserted if inserted else 0.0,
                "evicted": sum(s["evicted"] for s in stats)}

    def _report(self, drawers: list[BatchDrawer]) -> None:
        try:
            self.replay = self._replay_status()
            self.shards = self.buffers.shard_status()
        except redis.RedisError:
            pass
        share = self.compute_share()
        status = {
            "state": self.state,
            "batches": self.learner.batches,
            "samples_per_s": round(self.samples_per_s, 2),
            "batches_per_s": round(self.batches_per_s, 3),
            "loss": round(self.last_metrics.get("loss", float("nan")), 6) if self.last_metrics else "",
            "version": self.published_version,
            "redis_ok": int(all(d.redis_ok for d in drawers)),
            "samples_drawn": sum(d.drawn_samples for d in drawers),
            "bad_rows": sum(d.bad_rows for d in drawers),
            "learning_rate": self.learner.learning_rate,
            "metrics": json.dumps({k: round(v, 5) for k, v in self.last_metrics.items()}),
            "compute_share": "" if share is None else round(share, 3),
            "wait_filling_s": round(sum(d.wait_s[FILLING] for d in drawers), 1),
            "wait_limited_s": round(sum(d.wait_s[LIMITED] for d in drawers), 1),
            "shards": json.dumps(self.shards),
            **{k: round(v, 3) for k, v in self.replay.items()},
            **{k: round(v, 3) for k, v in self.age.stats().items()},
        }
        if self.on_status is not None:
            try:
                self.on_status(status)
            except CONNECTION_ERRORS:
                pass
