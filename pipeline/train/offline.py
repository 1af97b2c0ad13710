"""Offline training: epochs over recorded data with the live trainer's Learner and columns.

The model, loss, optimizer step and checkpoint files are the live trainer's own
(`pipeline.train.learner.Learner`), so a checkpoint trained here resumes live, and
`charles push` publishes it to players. What is added: epochs, a validation pass per
epoch (by episode, see `pipeline.train.dataset.split_episodes`), the best checkpoint kept
apart, and a progress bar.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from pipeline.config import Config
from pipeline.train.augment import Augmenter, AugmentSettings
from pipeline.train.dataset import (
    DataSpec,
    RecordedDataset,
    balanced_weights,
    collate,
    find_episodes,
    split_episodes,
)
from pipeline.train.learner import Learner
from pipeline.wire.schema import ContextSpec, SampleSchema

log = structlog.get_logger(__name__)


@dataclass
class OfflineSettings:
    """Everything `charles train` takes besides the run config."""

    dirs: Sequence[Path]
    out_dir: Path
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 0
    balance: bool = True
    augment: bool = True
    stride_frames: int | None = None
    shift_frames: int | None = None
    sample_every: int = 1
    log_every: int = 10
    checkpoint_every: int = 500


def build_datasets(cfg: Config, s: OfflineSettings) -> tuple[RecordedDataset, RecordedDataset]:
    """Train and validation datasets from the data directories, split by episode."""
    spec = DataSpec(ContextSpec.from_inputs(cfg.inputs, cfg.game.fps), cfg.game.hood_width, cfg.game.hood_height,
                    frame_stride_frames=s.stride_frames, label_shift_frames=s.shift_frames,
                    sample_every=s.sample_every)
    episodes = find_episodes(s.dirs)
    missing = sorted({m for ep in episodes for m in ep.metas[0].get("inputs_missing", [])
                      if getattr(cfg.inputs, m, False)})
    if missing:
        log.warning("inputs_not_recorded", inputs=missing,
                    hint="these inputs are zeros in some recordings; set them false in [inputs]")
    train_eps, val_eps = split_episodes(episodes, s.val_fraction, s.seed)
    augment = Augmenter(AugmentSettings()) if s.augment else None
    train = RecordedDataset(train_eps, spec, augment=augment, seed=s.seed)
    val = RecordedDataset(val_eps, spec, augment=None, seed=s.seed)
    log.info("offline_data", episodes=len(episodes), train_episodes=len(train_eps), val_episodes=len(val_eps),
             train_samples=len(train), val_samples=len(val))
    if len(train) == 0:
        raise ValueError("no training samples: recordings too short for the sequence/label shift, or all padding")
    return train, val


def build_loaders(train: RecordedDataset, val: RecordedDataset, cfg: Config, s: OfflineSettings) -> tuple[Any, Any]:
    """DataLoaders yielding numpy columns (schema.FIELDS); train is bin-balanced when asked."""
    import torch
    from torch.utils.data import DataLoader, WeightedRandomSampler

    from pipeline.collect.bins import build_binnings

    batch = s.batch_size or cfg.trainer.batch_size
    gen = torch.Generator().manual_seed(s.seed)
    sampler = None
    if s.balance:
        weights = balanced_weights(train, build_binnings(cfg.outputs))
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(train),
                                        replacement=True, generator=gen)
    common: dict[str, Any] = {"collate_fn": collate, "num_workers": s.workers, "persistent_workers": s.workers > 0}
    train_loader = DataLoader(train, batch_size=batch, sampler=sampler, shuffle=sampler is None,  # type: ignore[arg-type]
                              generator=None if sampler is not None else gen,
                              drop_last=len(train) >= batch, **common)
    val_loader = DataLoader(val, batch_size=batch, shuffle=False, **common) if len(val) else None  # type: ignore[arg-type]
    return train_loader, val_loader


class OfflineTrainer:
    """Epochs of Learner.step over a loader, validation after each, TensorBoard and checkpoints."""

    def __init__(self, learner: Learner, train_loader: Any, val_loader: Any | None, schema: SampleSchema,
                 out_dir: Path, model_name: str, writer: Any | None = None, log_every: int = 10,
                 checkpoint_every: int = 500, extra: dict[str, Any] | None = None) -> None:
        self.learner = learner
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.schema = schema
        self.out_dir = Path(out_dir)
        self.model_name = model_name
        self.writer = writer
        self.log_every = log_every
        self.checkpoint_every = checkpoint_every
        self.extra = extra or {}
        self.best_val = float("inf")
        self.history: list[dict[str, float]] = []
        self._checked = False

    def validate(self) -> dict[str, float]:
        """Mean loss and metrics over the validation set (weighted by batch size)."""
        import torch

        from pipeline.models import batch_to_tensors, compute_loss

        if self.val_loader is None:
            return {}
        model = getattr(self.learner, "module", self.learner.model)  # the plain model, not a DDP wrapper
        model.eval()
        sums: dict[str, float] = {}
        n = 0
        with torch.no_grad():
            for columns in self.val_loader:
                batch = batch_to_tensors(columns, self.learner.device)
                logits = model(batch)
                total, per_output, metrics = compute_loss(model, logits, batch)
                size = len(columns["speed"])
                values = {"loss": float(total), **{f"{k}/loss": float(v) for k, v in per_output.items()}, **metrics}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v * size
                n += size
        model.train()
        return {k: v / max(n, 1) for k, v in sums.items()}

    def _step(self, columns: dict[str, np.ndarray], force_metrics: bool = False) -> dict[str, float]:
        if not self._checked:  # the first batch proves the files match the model's schema
            self.schema.validate_columns(columns)
            self._checked = True
        metrics = self.learner.step(columns, with_metrics=force_metrics or (self.learner.batches + 1) % self.log_every == 0)
        n = self.learner.batches
        if self.writer is not None and metrics:
            for name, value in metrics.items():
                self.writer.add_scalar("loss/total" if name == "loss" else name, value, n)
        if n % self.checkpoint_every == 0:
            self.save(self.out_dir)
        return metrics

    def save(self, folder: Path, **extra: Any) -> None:
        self.learner.save_checkpoint(folder, {"model": self.model_name, "offline": True, **self.extra, **extra})

    def run(self, epochs: int, max_steps: int | None = None, stop: threading.Event | None = None,
            show_progress: bool | None = None) -> dict[str, Any]:
        """Train for `epochs` (or `max_steps` batches); returns per-epoch train/val losses."""
        from pipeline.observe.progress import progress_bar

        steps = 0
        start = time.monotonic()
        for epoch in range(1, epochs + 1):
            losses: list[float] = []
            total = len(self.train_loader)
            if max_steps is not None:
                total = min(total, max_steps - steps)
            with progress_bar(f"epoch {epoch}/{epochs}", total=total, unit="batches", show=show_progress) as bar:
                for i, columns in enumerate(self.train_loader):
                    if (stop is not None and stop.is_set()) or (max_steps is not None and steps >= max_steps):
                        break
                    # metrics only on logged steps (no sync otherwise), and on an epoch's last: an
                    # epoch shorter than log_every still has a train loss (it was NaN, and so the JSON)
                    metrics = self._step(columns, force_metrics=i == total - 1)
                    if "loss" in metrics:
                        losses.append(metrics["loss"])
                    steps += 1
                    bar.advance()
                    if "loss" in metrics:
                        bar.update(description=f"epoch {epoch}/{epochs} loss {np.mean(losses[-self.log_every:]):.4f}")
            val = self.validate()
            record = {"epoch": epoch, "batches": self.learner.batches, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                      **{f"val_{k}": v for k, v in val.items()}}
            self.history.append(record)
            if self.writer is not None:
                self.writer.add_scalar("epoch/train_loss", record["train_loss"], epoch)
                for k, v in val.items():
                    self.writer.add_scalar(f"val/{k}", v, self.learner.batches)
                self.writer.add_scalar("epoch/val_loss", val.get("loss", float("nan")), epoch)
            self.save(self.out_dir, epoch=epoch, val_loss=val.get("loss"))
            if val and val["loss"] < self.best_val:
                self.best_val = val["loss"]
                self.save(self.out_dir / "best", epoch=epoch, val_loss=val["loss"])
            log.info("epoch_done", **{k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()})
            if (stop is not None and stop.is_set()) or (max_steps is not None and steps >= max_steps):
                break
        summary = {"steps": steps, "batches": self.learner.batches, "wall_s": round(time.monotonic() - start, 2),
                   "best_val_loss": None if self.best_val == float("inf") else self.best_val, "epochs": self.history}
        (self.out_dir / "offline.json").write_text(json.dumps(summary, indent=1))
        return summary
