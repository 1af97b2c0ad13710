"""Recording a continuous drive (a human, or the NPC) tick by tick, as `ticks` chunks.

Every tick is kept, not a balanced subset: sequences, strides and label shifts are chosen
later, at training time. Row t holds frame t with the controls in effect while it was
shown, and `actions[t]`: what the driver chose after seeing it (the controls of step
t + 1), so the label at shift Δ is `actions[t + Δ]` exactly as the collector labels live
samples. A respawn (the game moved the car) ends a run: the next chunk starts one tick
later than the last one ended, so no training window spans the jump.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from pipeline.config import Config
from pipeline.data.chunks import ChunkWriter, DiskBudget
from pipeline.games.base import Controls, Environment, Game, Observation

log = structlog.get_logger(__name__)
ControlsSource = Callable[[Observation], Controls | None]


@dataclass
class DriveSummary:
    episode: str
    ticks: int = 0
    chunks: int = 0
    respawns: int = 0
    wall_s: float = 0.0
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class DriveRecorder:
    """Drives one episode with `source` (None = the game's own driver) and writes every tick."""

    def __init__(self, game: Game, writer: ChunkWriter, episode: str, collector: str, source_name: str,
                 chunk_rows: int = 300, minimap_box: list[float] | None = None, padding: int = 0,
                 budget: DiskBudget | None = None) -> None:
        self.game = game
        self.writer = writer
        self.episode = episode
        self.collector = collector
        self.source_name = source_name
        self.chunk_rows = chunk_rows
        self.minimap_box = minimap_box
        self.padding = padding
        self.budget = budget
        self._rows: list[tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray, float]] = []
        self._first_tick = 0

    def run(self, env: Environment, seconds: float | None, source: ControlsSource,
            stop: threading.Event | None = None) -> DriveSummary:
        """Record until `seconds` of game time pass or `stop` is set; every chunk is durable."""
        start = time.monotonic()
        summary = DriveSummary(self.episode)
        self._env = env.to_dict()
        obs = self.game.reset(env)
        limit = None if seconds is None else int(round(seconds * self.game.fps))
        tick = 0
        while (limit is None or tick < limit) and not (stop is not None and stop.is_set()):
            nxt = self.game.step(source(obs))
            self._rows.append((obs.frame.copy(), float(obs.speed), np.asarray(obs.purpose, np.float32),
                               obs.controls.as_array(), nxt.controls.as_array(), float(obs.game_time)))
            tick += 1
            summary.ticks += 1
            if nxt.info.get("respawned"):
                summary.respawns += 1
                self._flush(summary, gap=1)
            elif len(self._rows) >= self.chunk_rows:
                self._flush(summary)
            obs = nxt
        self._flush(summary)
        summary.wall_s = round(time.monotonic() - start, 3)
        return summary

    def _flush(self, summary: DriveSummary, gap: int = 0) -> None:
        if self._rows:
            frames, speed, purpose, controls, actions, game_time = zip(*self._rows, strict=True)
            h, w = frames[0].shape[:2]
            meta = self.writer.write("ticks", self.episode, "ticks", {
                "frames": np.stack(frames),
                "speed": np.asarray(speed, np.float32),
                "purpose": np.stack(purpose).astype(np.float32),
                "controls": np.stack(controls).astype(np.float32),
                "actions": np.stack(actions).astype(np.float32),
                "game_time": np.asarray(game_time, np.float64),
            }, {
                "fps": float(self.game.fps), "source": self.source_name, "collector": self.collector,
                "environment": self._env, "first_tick": self._first_tick, "padding": self.padding,
                "minimap_box": self.minimap_box, "frame_size": [w, h],
            })
            self._first_tick += len(self._rows)
            self._rows = []
            summary.chunks += 1
            summary.files.append(str(meta.data_path))
            if self.budget is not None:
                self.budget.add(meta)
            log.info("drive_chunk_written", episode=self.episode, rows=meta.rows, file=meta.file)
        self._first_tick += gap


def record_drive(cfg: Config, out_dir: Path, driver: str, env: Environment, seconds: float | None,
                 stop: threading.Event, padding_s: float = 0.0, budget_bytes: int | None = None,
                 compress: bool = False) -> DriveSummary:
    """`charles record drive`: one drive of `driver` ("human" or "npc") recorded into `out_dir`.
    On the simulator a human drives in a window with the keyboard (Esc/Q ends the recording);
    on a real game the game's own driver (the human at the pad, or its NPC) drives. A folder
    this call created is removed again when the drive fails before writing anything."""
    from pipeline.games.base import load_game
    from pipeline.games.options import game_options
    from pipeline.train.augment import minimap_box_for

    options = game_options(cfg, realtime=driver == "human")
    real = cfg.game.backend in ("gta5", "screen")
    if real:
        options["driver"] = driver
    game = load_game(cfg.game.backend, **options)
    source: ControlsSource = lambda obs: None  # noqa: E731 - None: the game's own driver drives
    window = None
    if driver == "human" and not real:  # the sim: a window shows the drive, its keys drive
        from pipeline.errors import CharlesError, GameError
        from pipeline.games.sim.viewer import DRIVE_KEYS_HELP, KeyboardDriver, SimWindow, composite

        try:
            window = SimWindow((cfg.game.cinematic_width, cfg.game.cinematic_height), "Charles record",
                               f"{DRIVE_KEYS_HELP}, Esc/Q ends the recording")
        except CharlesError as exc:
            game.close()
            raise GameError(f"the human drives the sim in a window: {exc}") from None
        keyboard = KeyboardDriver()

        def source(obs: Observation) -> Controls | None:
            window.show(composite(game, obs))
            keys = window.keys()
            if "quit" in keys:
                stop.set()  # this tick is the last one recorded
            return keyboard.controls(keys)

    fresh_folder = not out_dir.exists()
    episode = f"drive-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    recorder = DriveRecorder(game, ChunkWriter(out_dir, compress=compress), episode, collector=driver,
                             source_name=f"drive:{driver}", chunk_rows=max(1, round(cfg.game.fps * 10)),
                             minimap_box=minimap_box_for(cfg.game), padding=round(padding_s * cfg.game.fps),
                             budget=DiskBudget(out_dir, budget_bytes))
    try:
        return recorder.run(env, seconds, source, stop)
    except BaseException:
        if fresh_folder and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    finally:
        if window is not None:
            window.close()
        game.close()
