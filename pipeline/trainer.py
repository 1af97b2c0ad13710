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

from pipeline.buffers import Buffers
from pipeline.distributed import DistributedContext
from pipeline.keys import Keys
from pipeline.redis_conn import CONNECTION_ERRORS, Backoff
from pipeline.samples import SampleSchema, stack_rows
from pipeline.training import Learner
from pipeline.weights import WeightsInfo, WeightsStore

log = structlog.get_logger(__name__)
LOSS_HISTORY_LEN = 2000


class BatchDrawer(threading.Thread):
    """Draws and decodes batches ahead of the training step; puts None while buffers are short."""

    def __init__(self, buffers: Buffers, schema: SampleSchema, batch_size: int, out: queue.Queue[tuple[int, Any]],
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
                delay = backoff.next_delay()
                log.warning("redis_unavailable", what="draw", error=str(exc), retry_in_s=round(delay, 2))
                self.stop.wait(delay)
                continue
            rows = [row for rows in (drawn or {}).values() for row in rows]
            if not rows:  # below the gate (or empty buffers with a zero gate)
                self.waiting = True
                self.stop.wait(0.25)
                continue
            self.waiting = False
            try:
                columns = stack_rows(rows, self.schema, alloc=self.alloc)
            except Exception as exc:  # rows were validated on entry; a bad one is reported, not fatal
                self.bad_rows += len(rows)
                log.error("batch_rejected", error=str(exc), rows=len(rows))
                continue
            self.drawn_samples += len(rows)
            self.batches.put((len(rows), self.prepare(columns) if self.prepare else columns))


@dataclass
class TrainerSettings:
    model_name: str
    batch_size: int
    publish_every: int
    checkpoint_every: int
    log_every: int
    prefetch: int
    checkpoint_dir: Path


class Trainer:
    """One trainer process's loop; every step is bounded so tests can run it for N batches."""

    def __init__(self, r: redis.Redis, keys: Keys, learner: Learner, buffers: Buffers, schema: SampleSchema,
                 settings: TrainerSettings, weights: WeightsStore, writer: Any | None = None,
                 on_status: Callable[[dict[str, Any]], None] | None = None,
                 on_log: Callable[[int, dict[str, float], dict[str, np.ndarray]], None] | None = None,
                 on_publish: Callable[[WeightsInfo], None] | None = None,
                 dist: DistributedContext | None = None) -> None:
        self.r = r
        self.keys = keys
        self.learner = learner
        self.buffers = buffers
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

    def run(self, stop: threading.Event, max_batches: int | None = None) -> None:
        drawer_stop = threading.Event()
        ready: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=max(1, self.s.prefetch))
        # a GPU outruns one thread of draw + decode + copy; the CPU has no cycles to spare
        n_drawers = 2 if self.learner.device.type == "cuda" else 1
        drawers = [BatchDrawer(self.buffers, self.schema, self.s.batch_size, ready, drawer_stop,
                               prepare=self.learner.prepare, name=f"batch-drawer-{i}", alloc=self.learner.host_alloc)
                   for i in range(n_drawers)]
        for d in drawers:
            d.start()
        trained_here = False
        held: tuple[int, Any] | None = None
        window_start, window_batches, window_samples = time.monotonic(), 0, 0
        last_status = 0.0
        done = 0
        try:
            while not stop.is_set() and (max_batches is None or done < max_batches):
                if held is None:
                    try:
                        held = ready.get(timeout=0.25)
                    except queue.Empty:
                        if all(d.waiting for d in drawers):
                            self.state = "waiting" if trained_here else "filling"
                if self.dist is not None and not self.dist.all_ready(held is not None, self.learner.device):
                    continue  # some rank is short of data: everyone waits, batches are kept
                if held is not None:
                    (n_samples, batch), held = held, None
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
                                        min_version=self.learner.last_version)
        except CONNECTION_ERRORS as exc:
            log.warning("publish_failed", error=str(exc))
            return None
        self.learner.last_version = info.version
        self.published_version = info.version
        log.info("weights_published", version=info.version, batches=info.batches, bytes=None)
        if self.on_publish is not None:
            try:
                self.on_publish(info)
            except CONNECTION_ERRORS as exc:
                log.warning("on_publish_failed", version=info.version, error=str(exc))
        return info.version

    def checkpoint(self) -> None:
        self.learner.save_checkpoint(self.s.checkpoint_dir, {"model": self.s.model_name})
        log.info("checkpoint_saved", folder=str(self.s.checkpoint_dir), batches=self.learner.batches)

    def _report(self, drawers: list[BatchDrawer]) -> None:
        status = {
            "state": self.state,
            "batches": self.learner.batches,
            "samples_per_s": round(self.samples_per_s, 2),
            "batches_per_s": round(self.batches_per_s, 3),
            "loss": round(self.last_metrics.get("loss", float("nan")), 6) if self.last_metrics else "",
            "version": self.published_version,
            "redis_ok": int(all(d.redis_ok for d in drawers)),
            "samples_drawn": sum(d.drawn_samples for d in drawers),
            "learning_rate": self.learner.learning_rate,
            "metrics": json.dumps({k: round(v, 5) for k, v in self.last_metrics.items()}),
        }
        if self.on_status is not None:
            try:
                self.on_status(status)
            except CONNECTION_ERRORS:
                pass
