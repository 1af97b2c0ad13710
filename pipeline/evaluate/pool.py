"""Evaluation episodes driven in parallel: child processes that each hold a game and the model.

Why: a score is only as good as its number of episodes (`pipeline.evaluate.confidence`), and a new
version is published every minute or two. Episodes are independent and reproducible (the
plan fixes environment, map, spawn and traffic), so several run at once, one per child
process and core, and give exactly the traces that one process would.

Children are spawned, never forked (the parent may hold torch threads), ignore the
group's SIGINT/SIGTERM (the parent ends them), and talk over pipes in the project's
msgpack codec, never pickle: the parent sends `{"plan", "policy", "sha256"[, "weights"]}`
(the safetensors blob only the first time a child meets that model), the child answers
with the episode's ticks. A child that dies fails the run, and the next run starts a new set.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import structlog

from pipeline.errors import GameError
from pipeline.evaluate.metrics import Tick, Trace
from pipeline.wire import codec

log = structlog.get_logger(__name__)

_START_TIMEOUT_S = 180.0  # importing torch and a backend, building a world, on a busy machine
_POLL_S = 0.5


def _tick_row(t: Tick) -> list[Any]:
    return [t.kind, t.game_time, t.odometer, t.speed, t.lane_offset, t.collision, t.targets_reached,
            t.purpose_distance, None if t.target is None else list(t.target),
            None if t.route is None else list(t.route), t.score]


def _tick(row: list[Any]) -> Tick:
    kind, game_time, odo, speed, lane, collision, targets, purpose, target, route, score = row
    return Tick(kind, float(game_time), float(odo), float(speed), None if lane is None else float(lane),
                bool(collision), int(targets), float(purpose), None if target is None else (target[0], target[1]),
                None if route is None else (int(route[0]), float(route[1])), None if score is None else float(score))


def _serve(conn: Connection, config_json: str, episodes: int | None, seconds: float | None) -> None:
    """The child: build the game, then drive the episodes the parent asks for until it goes away."""
    from pipeline.log import configure_logging

    configure_logging("evaluator-episodes")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    from pipeline.config import Config
    from pipeline.evaluate.closed_loop import BASELINE, NPC, EvalSettings, Evaluator, model_policy
    from pipeline.games.base import load_game
    from pipeline.games.options import game_options
    from pipeline.models.loading import build_model_from
    from pipeline.wire.weights import from_blob

    torch.set_num_threads(1)
    try:
        cfg = Config.from_json(config_json)
        settings = EvalSettings.from_config(cfg, episodes=episodes, seconds=seconds)
        plans = settings.plan()
        game = load_game(cfg.game.backend, **game_options(cfg, realtime=False))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it there
        conn.send_bytes(codec.encode({"error": type(exc).__name__, "message": str(exc)}))
        return
    conn.send_bytes(codec.encode({"ready": True}))
    evaluator = Evaluator(game, settings)
    model_sha, model = "", None
    try:
        while True:
            try:
                msg = codec.decode(conn.recv_bytes(), max_bytes=1 << 31)
            except (EOFError, OSError):
                break
            try:
                name = msg["policy"]
                if name in (NPC.name, BASELINE.name):
                    policy = NPC if name == NPC.name else BASELINE
                else:
                    if msg["sha256"] != model_sha:
                        model = build_model_from(cfg, from_blob(msg["weights"], msg["sha256"]))
                        model_sha = msg["sha256"]
                    policy = model_policy(model)
                start = time.monotonic()
                trace = evaluator.drive(policy, plans[int(msg["plan"])])
                reply = {"plan": msg["plan"], "fps": trace.fps, "wall_s": time.monotonic() - start,
                         "ticks": [_tick_row(t) for t in trace.ticks]}
            except Exception as exc:  # noqa: BLE001 - the parent raises it
                reply = {"error": type(exc).__name__, "message": str(exc)}
            conn.send_bytes(codec.encode(reply))
    finally:
        game.close()


class _Child:
    def __init__(self, ctx: Any, index: int, config_json: str, episodes: int | None, seconds: float | None) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child_conn, config_json, episodes, seconds),
                                name=f"evaluator-episodes-{index}", daemon=True)
        self.proc.start()
        child_conn.close()
        self.sha = ""  # the model this child has built
        self.busy: tuple[int, float] | None = None  # (plan index, start)


class EpisodePool:
    """`processes` children, each with its own game; `run` drives a plan's episodes across them."""

    def __init__(self, config_json: str, processes: int, episodes: int | None = None,
                 seconds: float | None = None) -> None:
        self.config_json = config_json
        self.processes = processes
        self.episodes, self.seconds = episodes, seconds
        self._ctx = mp.get_context("spawn")
        self._children: list[_Child] = []

    def _start(self) -> None:
        if self._children and all(c.proc.is_alive() for c in self._children):
            return
        self.close()
        self._children = [_Child(self._ctx, i, self.config_json, self.episodes, self.seconds)
                          for i in range(self.processes)]
        for child in self._children:
            self._receive(child, _START_TIMEOUT_S)

    def _receive(self, child: _Child, timeout: float) -> dict[str, Any]:
        try:
            if not child.conn.poll(timeout):
                raise EOFError(f"no answer in {timeout:.0f} s")
            reply = codec.decode(child.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            self.close()
            raise GameError(f"an evaluation process ({child.proc.name}) died: {exc}") from None
        if "error" in reply:
            self.close()
            raise GameError(f"{child.proc.name}: {reply['error']}: {reply['message']}")
        return reply

    def run(self, policy: Any, plans: list[Any], stop: threading.Event | None = None,
            on_episode: Callable[[str, Trace], None] | None = None) -> list[Trace]:
        """One Trace per plan entry, in plan order (fewer, from the start, if `stop` is set);
        `on_episode(policy name, trace)` as each one ends, in the order they end."""
        from pipeline.evaluate.closed_loop import log_episode

        self._start()
        blob, sha = b"", ""
        if policy.model is not None:
            if policy.weights is None:
                from pipeline.wire.weights import to_blob

                blob = to_blob({k: v.detach().cpu() for k, v in policy.model.state_dict().items()})
            else:
                blob = policy.weights
            sha = hashlib.sha256(blob).hexdigest()
        todo = list(range(len(plans)))
        traces: dict[int, Trace] = {}
        while todo or any(c.busy for c in self._children):
            if stop is not None and stop.is_set():
                self.close()  # mid-episode children are ended; the caller discards a stopped run
                break
            for child in self._children:
                if child.busy is None and todo:
                    i = todo.pop(0)
                    msg: dict[str, Any] = {"plan": i, "policy": policy.name, "sha256": sha}
                    if sha and child.sha != sha:
                        msg["weights"], child.sha = blob, sha
                    child.conn.send_bytes(codec.encode(msg))
                    child.busy = (i, time.monotonic())
            busy = {c.conn: c for c in self._children if c.busy is not None}
            for conn in wait(list(busy), timeout=_POLL_S):
                child = busy[conn]  # type: ignore[index]
                reply = self._receive(child, 0)
                i, _ = child.busy  # type: ignore[misc]
                child.busy = None
                trace = Trace(plans[i].name, plans[i].env.map_seed, float(reply["fps"]),
                              [_tick(row) for row in reply["ticks"]])
                traces[i] = trace
                log_episode(policy.name, trace, float(reply["wall_s"]))
                if on_episode is not None:
                    on_episode(policy.name, trace)
        done = []
        for i in range(len(plans)):  # a stopped run keeps only its unbroken start
            if i not in traces:
                break
            done.append(traces[i])
        return done

    def close(self) -> None:
        """End every child (they ignore signals: killed here, or at EOF when the parent dies)."""
        for child in self._children:
            child.conn.close()
            child.proc.join(2.0)
            if child.proc.is_alive():
                child.proc.kill()
                child.proc.join(5.0)
        self._children = []
