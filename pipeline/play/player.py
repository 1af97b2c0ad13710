"""The player: drives with the current weights, detects Stuck, performs Unstuck, hot-swaps.

New weights are downloaded, verified and built in a background thread as soon as they
are announced; the swap happens only during an Unstuck pause, never mid-drive. A player
that missed a notification (late start, Redis outage) checks the latest version at its
next Unstuck. Redis being away never stops the driving: it keeps the weights it has.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
import structlog
import torch

from pipeline.collect.context import ContextBuilder
from pipeline.errors import GameError, WeightsError
from pipeline.games.base import Controls, Environment, Game, Observation
from pipeline.play.unstuck import StuckDetector
from pipeline.wire.keys import Keys
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff
from pipeline.wire.weights import WeightsInfo, WeightsStore, parse_notification

log = structlog.get_logger(__name__)


@dataclass
class PreparedModel:
    info: WeightsInfo
    model: torch.nn.Module


class WeightsWatcher(threading.Thread):
    """Listens for new versions and prepares them; `take()` hands over the newest prepared one."""

    def __init__(self, r: redis.Redis, keys: Keys, build: Callable[[dict[str, torch.Tensor]], torch.nn.Module],
                 model_name: str, follow: str, stop: threading.Event) -> None:
        super().__init__(name="weights-watcher", daemon=True)
        self.r = r
        self.keys = keys
        self.store = WeightsStore(r, keys)
        self.build = build
        self.model_name = model_name
        self.follow = follow
        self.stop = stop
        self.current_version = 0
        self._pending: PreparedModel | None = None
        self._lock = threading.Lock()
        self.rejected = 0
        self._bad: set[int] = set()
        self.connected = False
        self.pending_since: float | None = None

    @property
    def pending_version(self) -> int:
        with self._lock:
            return self._pending.info.version if self._pending else 0

    def take(self) -> PreparedModel | None:
        with self._lock:
            pending, self._pending = self._pending, None
            self.pending_since = None
        if pending is not None:
            self.current_version = pending.info.version
        return pending

    def _wanted_version(self) -> int | None:
        """The version this player follows right now (latest, or the evaluator's best)."""
        if self.follow == "best":
            best = self.r.hget(self.keys.weights_best, "version")
            return None if best is None or not best.isdigit() else int(best)
        info = self.store.latest_info()
        return None if info is None else info.version

    def prepare_latest(self) -> bool:
        """Fetch, verify and build the version we follow if it is newer; True if one is now pending."""
        wanted = self._wanted_version()
        if wanted is None or wanted <= max(self.current_version, self.pending_version) or wanted in self._bad:
            return False
        version = wanted if self.follow == "best" else None
        try:
            info, tensors = self.store.fetch(version, model=self.model_name)
            model = self.build(tensors)
        except WeightsError as exc:
            self._bad.add(wanted)
            self.rejected += 1
            log.error("weights_rejected", error=str(exc))
            return False
        with self._lock:
            if self._pending is None or info.version > self._pending.info.version:
                self._pending = PreparedModel(info, model)
                self.pending_since = self.pending_since or time.monotonic()
        log.info("weights_prepared", version=info.version, batches=info.batches)
        return True

    def run(self) -> None:
        backoff = Backoff()
        while not self.stop.is_set():
            pubsub = None
            try:
                pubsub = self.r.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.keys.weights_channel)
                self.connected = True
                backoff.reset()
                self.prepare_latest()  # anything published while we were away
                while not self.stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    note = parse_notification(msg["data"])
                    if note is None:
                        log.warning("bad_weights_notification", data=str(msg["data"])[:200])
                        continue
                    if note.version > max(self.current_version, self.pending_version):
                        self.prepare_latest()
            except CONNECTION_ERRORS as exc:
                self.connected = False
                backoff.wait_out(exc, "weights", self.stop)
            except Exception:  # a malformed weights field or a refused command: keep driving, retry
                delay = backoff.next_delay()
                log.exception("weights_watch_failed", retry_in_s=round(delay, 2))
                self.stop.wait(delay)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except CONNECTION_ERRORS:
                        pass


@dataclass
class PlayerStats:
    steps: int = 0
    predictions: int = 0
    swaps: int = 0
    unstucks: int = 0
    swap_pause_ms: float = 0.0  # the last swap: take the prepared model, reset, its first prediction
    fps: float = 0.0
    pps: float = 0.0
    raw: dict[str, list[float]] = field(default_factory=dict)
    translated: dict[str, float] = field(default_factory=dict)
    applied: dict[str, float] = field(default_factory=dict)


class Player:
    """The driving loop; `run(stop, max_steps)` is bounded for tests."""

    def __init__(self, game: Game, model: torch.nn.Module, context: ContextBuilder, detector: StuckDetector,
                 predict: Callable[[torch.nn.Module, dict[str, np.ndarray]], tuple[dict[str, list[float]], Any]],
                 watcher: WeightsWatcher | None, translate: Callable[[Any], dict[str, float]] | None = None,
                 pps: float = 30.0, realtime: bool = True, max_drive_s: float = 90.0,
                 report: Callable[[dict[str, Any]], None] | None = None,
                 live_view: Callable[[Observation, torch.nn.Module], None] | None = None,
                 version: int = 0, model_created: float = 0.0, overlap: bool = False) -> None:
        self.game = game
        self.model = model
        self.context = context
        self.detector = detector
        self.predict = predict
        self.watcher = watcher
        self.translate = translate
        self.pps = pps
        self.realtime = realtime
        self.max_drive_s = max_drive_s
        self.report = report
        self.live_view = live_view
        self.version = version
        self.model_created = model_created
        self.stats = PlayerStats()
        self.events: list[dict[str, Any]] = []
        #: with `overlap`, the game steps in a second thread while the model predicts and applies
        #: the previous prediction, as a real game running on its own would (one tick of latency)
        self._stepper = ThreadPoolExecutor(1, thread_name_prefix="game-step") if overlap else None
        self._previous = Controls()
        self._stop = threading.Event()  # run()'s stop: a game that stays down must not hold the player
        if watcher is not None:
            watcher.current_version = version

    def start(self, env: Environment) -> Observation:
        obs = self._retry_game(lambda: self.game.reset(env), "reset")
        self.context.reset()
        self.context.push(obs)
        self.detector.reset(obs)
        self._previous = Controls()
        return obs

    def run(self, env: Environment, stop: threading.Event, max_steps: int | None = None) -> PlayerStats:
        self._stop = stop
        try:
            obs = self.start(env)
        except GameError:  # raised by _retry_game only once stop is set
            return self.stats
        period = 1.0 / self.pps
        window_start, window_steps = time.monotonic(), 0
        last_report = 0.0
        drive_start = time.monotonic()
        while not stop.is_set() and (max_steps is None or self.stats.steps < max_steps):
            tick_start = time.monotonic()
            if self.detector.stuck or self._swap_overdue(drive_start):
                try:
                    obs = self.unstuck("stuck" if self.detector.stuck else "weights_waiting")
                except GameError:  # stopped while the game was down
                    break
                drive_start = time.monotonic()
            try:
                obs = self._predict_and_step()
            except GameError as exc:
                log.warning("game_error", error=str(exc))
                stop.wait(0.5)
                continue
            self.context.push(obs)
            self.detector.update(obs)
            self.stats.steps += 1
            window_steps += 1
            if self.live_view is not None:
                self.live_view(obs, self.model)
            now = time.monotonic()
            if now - window_start >= 1.0:
                self.stats.fps = self.stats.pps = window_steps / (now - window_start)
                window_start, window_steps = now, 0
            if self.report is not None and now - last_report >= 0.5:
                self._report()
                last_report = now
            if not self.realtime:
                continue
            spare = period - (time.monotonic() - tick_start)
            if spare > 0:
                stop.wait(spare)
        if self.report is not None:
            self._report()
        return self.stats

    def _predict_and_step(self) -> Observation:
        """Predict on the newest frame and advance the game (overlapped when `overlap`)."""
        step = None
        if self._stepper is not None:
            step = self._stepper.submit(self.game.step, self._previous)
        raw, controls = self.predict(self.model, self.context.context(0))
        self.stats.predictions += 1
        self.stats.raw = raw
        self.stats.applied = {"acceleration_braking": controls.acceleration_braking, "steering": controls.steering}
        if self.translate is not None:
            self.stats.translated = self.translate(controls)
        self._previous = controls
        return step.result() if step is not None else self.game.step(controls)

    def _swap_overdue(self, drive_start: float) -> bool:
        if self.watcher is None or self.watcher.pending_since is None:
            return False
        return time.monotonic() - max(drive_start, self.watcher.pending_since) > self.max_drive_s

    def unstuck(self, reason: str) -> Observation:
        """Stop predicting, respawn, swap in pending weights, resume."""
        self.stats.unstucks += 1
        pause_start = time.monotonic()
        obs = self._retry_game(self.game.respawn, "respawn")
        swap_start = time.monotonic()
        swapped = self.swap_pending()
        self._previous = Controls()
        self.context.reset()
        self.context.push(obs)
        self.detector.reset(obs)
        if swapped is not None:
            # a new model's first call (CUDA graph capture, allocations) belongs in the pause, not the drive
            self.predict(self.model, self.context.context(0))
            self.stats.swap_pause_ms = (time.monotonic() - swap_start) * 1000
        event = {"event": "unstuck", "reason": reason, "swapped_to": swapped, "at": time.time()}
        self.events.append(event)
        log.info("unstuck", reason=reason, swapped_to=swapped, version=self.version,
                 pause_ms=round((time.monotonic() - pause_start) * 1000, 1))
        return obs

    def _retry_game(self, call: Callable[[], Observation], what: str) -> Observation:
        """Reset/respawn may fail while a real game's bridge is down: retry with backoff until
        it works, or re-raise the last GameError once the player is asked to stop."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                return call()
            except GameError as exc:
                if backoff.wait_out(exc, what, self._stop, event="game_error"):
                    raise

    def swap_pending(self) -> int | None:
        """Swap in the newest prepared model (checking Redis for one we may have missed)."""
        if self.watcher is None:
            return None
        if self.watcher.pending_version == 0:
            try:
                self.watcher.prepare_latest()
            except CONNECTION_ERRORS as exc:
                log.warning("redis_unavailable", what="check_latest", error=str(exc))
        prepared = self.watcher.take()
        if prepared is None:
            return None
        self.model = prepared.model
        self.version = prepared.info.version
        self.model_created = prepared.info.created
        self.stats.swaps += 1
        return self.version

    def _report(self) -> None:
        s = self.stats
        status = {
            "model_version": self.version,
            "model_created": self.model_created,
            "pending_version": self.watcher.pending_version if self.watcher else 0,
            "swaps": s.swaps,
            "swap_pause_ms": round(s.swap_pause_ms, 1),
            "unstucks": s.unstucks,
            "steps": s.steps,
            "pps": round(s.pps, 2),
            "fps": round(s.fps, 2),
            "raw": json.dumps(s.raw),
            "translated": json.dumps(s.translated),
            "applied": json.dumps(s.applied),
            "redis_ok": int(self.watcher.connected) if self.watcher else 0,
        }
        try:
            self.report(status)  # type: ignore[misc]
        except CONNECTION_ERRORS:
            pass
