"""Any game backend in a child process: the player's model and the game's CPU work stop
sharing one interpreter lock.

With the simulator in the player's own process, its Python (physics, traffic, scene
lists) and the model's kernel launches take turns on the GIL even when the game steps in
a second thread. In a child process they run on two cores, as a real game does. Frames
come back through shared memory (one block per image size, owned by the child); the
rest of an `Observation` goes over a pipe in the project's msgpack codec (no pickle).
A child that dies is started again and its episode reset, and the call that saw it die
raises `GameError`, which the player and evaluator already retry.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from dataclasses import fields
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, GameError
from pipeline.games.base import Controls, Environment, Observation
from pipeline.wire import codec

_START_TIMEOUT_S = 120.0  # importing a backend and building its first world
_CALL_TIMEOUT_S = 120.0  # a reset builds a world; a step takes milliseconds
_KNOWN_ERRORS: dict[str, type[Exception]] = {"GameError": GameError, "ConfigError": ConfigError}
_SCALARS = [f.name for f in fields(Observation) if f.name not in ("frame", "controls", "purpose")]


class _FrameSlots:
    """The child's shared-memory blocks, one per image size ("hood", "cinematic")."""

    def __init__(self) -> None:
        self._blocks: dict[str, SharedMemory] = {}

    def put(self, slot: str, image: np.ndarray) -> dict[str, Any]:
        block = self._blocks.get(slot)
        if block is None or block.size < image.nbytes:
            if block is not None:
                block.close()
                block.unlink()
            block = self._blocks[slot] = SharedMemory(create=True, size=max(image.nbytes, 1))
        np.ndarray(image.shape, image.dtype, buffer=block.buf)[...] = image
        return {"slot": slot, "shm": block.name, "shape": list(image.shape), "dtype": image.dtype.str}

    def close(self) -> None:
        for block in self._blocks.values():
            block.close()
            block.unlink()
        self._blocks.clear()


def _observation_message(obs: Observation, slots: _FrameSlots) -> dict[str, Any]:
    msg = {name: getattr(obs, name) for name in _SCALARS}
    msg["frame"] = slots.put("hood", obs.frame)
    msg["controls"] = [obs.controls.acceleration_braking, obs.controls.steering]
    msg["purpose"] = np.asarray(obs.purpose, np.float32)
    return msg


def _serve(conn: Connection, backend: str, options: dict[str, Any]) -> None:
    """The child: build the backend, then answer calls until `close` or the parent goes away."""
    from pipeline.games.base import load_game
    from pipeline.log import configure_logging

    configure_logging(f"game-{backend}")  # the parent's format and level (from the environment)
    # Ctrl-C and honcho's SIGTERM reach the whole process group: the parent decides when the
    # game ends (close, or its pipe closing when it exits), never a half-stopped child mid-step
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    slots = _FrameSlots()
    try:
        game = load_game(backend, **options)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it there
        conn.send_bytes(codec.encode({"error": type(exc).__name__, "message": str(exc)}))
        return
    conn.send_bytes(codec.encode({"fps": float(game.fps)}))
    try:
        while True:
            try:
                op, arg = codec.decode(conn.recv_bytes())
            except (EOFError, OSError):
                break
            try:
                if op == "step":
                    reply = _observation_message(game.step(None if arg is None else Controls(*arg)), slots)
                elif op == "reset":
                    reply = _observation_message(game.reset(Environment.from_dict(arg)), slots)
                elif op == "respawn":
                    reply = _observation_message(game.respawn(), slots)
                elif op == "cinematic":
                    reply = {"frame": slots.put("cinematic", game.cinematic())}
                elif op == "close":
                    game.close()
                    conn.send_bytes(codec.encode({}))
                    break
                else:
                    reply = {"error": "GameError", "message": f"unknown game call {op!r}"}
            except Exception as exc:  # noqa: BLE001 - the parent raises it in the caller
                reply = {"error": type(exc).__name__, "message": str(exc)}
            conn.send_bytes(codec.encode(reply))
    finally:
        slots.close()


class ProcessGame:
    """A `Game` whose backend runs in a child process; same calls, same observations."""

    def __init__(self, backend: str, **options: Any) -> None:
        self.backend, self.options = backend, options
        self._ctx = mp.get_context("spawn")  # the parent may hold CUDA and threads: never fork it
        self._lock = threading.Lock()
        self._views: dict[str, SharedMemory] = {}  # per slot, the child's current block
        self._env: Environment | None = None
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self._conn, child_conn = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child_conn, self.backend, self.options),
                                       name=f"game-{self.backend}", daemon=True)
        self._proc.start()
        child_conn.close()
        try:
            hello = self._receive(_START_TIMEOUT_S)
        except (EOFError, OSError) as exc:
            raise GameError(f"game process ({self.backend}) did not start: {exc}") from None
        self.fps = float(hello["fps"])

    # -- the Game protocol ------------------------------------------------------------------

    def reset(self, env: Environment) -> Observation:
        self._env = env
        return self._observation(self._call("reset", env.to_dict()))

    def step(self, controls: Controls | None = None) -> Observation:
        arg = None if controls is None else [controls.acceleration_braking, controls.steering]
        return self._observation(self._call("step", arg))

    def respawn(self) -> Observation:
        return self._observation(self._call("respawn", None))

    def cinematic(self) -> np.ndarray:
        return self._image(self._call("cinematic", None)["frame"])

    def close(self) -> None:
        with self._lock:
            if self._proc.is_alive():
                try:
                    self._conn.send_bytes(codec.encode(["close", None]))
                    self._receive(10.0)
                except (GameError, OSError, EOFError):
                    pass
            self._proc.join(5.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5.0)
            self._conn.close()
            for view in self._views.values():
                view.close()
            self._views.clear()

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, op: str, arg: Any) -> dict[str, Any]:
        with self._lock:
            try:
                self._conn.send_bytes(codec.encode([op, arg]))
                return self._receive(_CALL_TIMEOUT_S)
            except (EOFError, OSError, BrokenPipeError) as exc:
                self._restart(f"{op}: {exc}")
                raise GameError(f"game process ({self.backend}) died during {op}; restarted") from None

    def _receive(self, timeout: float) -> dict[str, Any]:
        if not self._conn.poll(timeout):
            self._proc.kill()
            raise EOFError(f"no answer in {timeout:.0f} s")
        reply = codec.decode(self._conn.recv_bytes())
        if "error" in reply:
            if reply["error"] in _KNOWN_ERRORS:
                raise _KNOWN_ERRORS[reply["error"]](reply["message"])
            raise RuntimeError(f"game process: {reply['error']}: {reply['message']}")
        return reply

    def _restart(self, why: str) -> None:
        """A new child, its episode reset to the last environment (a fresh episode)."""
        self._proc.join(1.0)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()
        for view in self._views.values():
            view.close()
        self._views.clear()
        self.restarts += 1
        self._start()
        if self._env is not None:
            self._conn.send_bytes(codec.encode(["reset", self._env.to_dict()]))
            self._receive(_CALL_TIMEOUT_S)

    def _image(self, ref: dict[str, Any]) -> np.ndarray:
        """A private copy of a frame in shared memory (the child overwrites it next call)."""
        view = self._views.get(ref["slot"])
        if view is None or view.name != ref["shm"]:  # first frame, or the child grew the block
            if view is not None:
                view.close()
            view = self._views[ref["slot"]] = SharedMemory(name=ref["shm"])
        shape, dtype = tuple(ref["shape"]), np.dtype(ref["dtype"])
        return np.ndarray(shape, dtype, buffer=view.buf).copy()

    def _observation(self, msg: dict[str, Any]) -> Observation:
        values = {name: msg[name] for name in _SCALARS}
        if values["position"] is not None:
            values["position"] = tuple(values["position"])
        return Observation(frame=self._image(msg["frame"]), controls=Controls(*msg["controls"]),
                           purpose=np.asarray(msg["purpose"], np.float32), **values)
