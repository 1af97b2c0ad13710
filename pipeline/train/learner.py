"""The learning step and checkpoints, apart from where batches come from (Redis or files).

Checkpoints are three files in one folder, swapped in whole: `model.safetensors`, `optimizer.safetensors`
and `trainer.json` (batch counter, last published version, optimizer settings). No pickle. The
weights files carry the same metadata as published weights (`wire.weights.weights_metadata`:
model, batches, config sha256), so a tool can tell which config a file needs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel

from pipeline.errors import WeightsError
from pipeline.models.loading import pick_device
from pipeline.train.bin_weights import BinWeights
from pipeline.wire.weights import weights_metadata

log = structlog.get_logger(__name__)

def decayed_learning_rate(base: float, batches: int, decay_batches: int, final_fraction: float) -> float:
    """The learning rate after `batches`: a cosine from `base` down to `base * final_fraction`
    over `decay_batches`, then flat (a trainer that runs on for days keeps learning, slowly);
    `decay_batches` 0 = `base` throughout."""
    if decay_batches <= 0:
        return base
    progress = min(1.0, batches / decay_batches)
    return base * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class Learner:
    """Model + optimizer + one `step(columns)`; used by the live trainer and offline training."""

    def __init__(self, model: torch.nn.Module, learning_rate: float, weight_decay: float = 0.0,
                 device: str | torch.device = "auto", amp: bool = True, grad_clip: float = 10.0,
                 wrap: Any = None, ema_decay: float = 0.0, augment_shift_px: int = 0, lr_decay_batches: int = 0,
                 lr_final_fraction: float = 0.1, row_weights: BinWeights | None = None) -> None:
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.module = model.to(self.device)  # the plain model: heads, weights, checkpoints
        if self.device.type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)
        #: what forward/backward run through: the module itself, or a DDP wrapper around it
        self.model = wrap(self.module) if wrap is not None else self.module
        params = [p for p in self.module.parameters() if p.requires_grad]
        # fused: one kernel for the whole update on a GPU instead of several per tensor
        self.optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay,
                                           fused=self.device.type == "cuda")
        self.amp = amp and self.device.type == "cuda"
        self.grad_clip = grad_clip
        self.augment_shift_px = augment_shift_px  # random shift of the frames of every training step
        self.row_weights = row_weights  # balancing at training time: each batch's rows weighted in the loss
        #: the schedule's base, length and floor (`decayed_learning_rate`); it follows `batches`, so a
        #: resumed checkpoint goes on where it stopped
        self.lr_schedule = (learning_rate, lr_decay_batches, lr_final_fraction)
        self.batches = 0
        self.last_version = 0
        self._local = threading.local()
        #: with `ema_decay` > 0, an exponential moving average of the weights (and BatchNorm
        #: statistics) is what `weights()` publishes and checkpoints keep beside the model:
        #: one iterate at a constant learning rate carries the noise of its last batches
        self.ema_decay = ema_decay
        self.ema: AveragedModel | None = None
        if ema_decay > 0:
            self.ema = AveragedModel(self.module, multi_avg_fn=self._average_in, use_buffers=True)

    @torch.no_grad()
    def _average_in(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _n_averaged: Any) -> None:
        """The mean of the iterates so far, until there are more than the decay's span
        (1 / (1 - decay) batches), then the moving average. A plain moving average that starts
        from the first iterate still gave it 67% of the weight at the first publication (200
        batches at 0.998), so the first versions drove like an untrained model."""
        weight = max(1.0 - self.ema_decay, 1.0 / (self.batches + 1))  # `batches` counts the steps before this one
        for avg, cur in zip(averaged, current, strict=True):
            if avg.is_floating_point():
                avg.lerp_(cur, weight)
            else:  # counters (BatchNorm's batches seen): the model's own
                avg.copy_(cur)

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def host_alloc(self) -> Any:
        """On CUDA, an allocator of pinned host arrays for batches (copied to the GPU asynchronously)."""
        if self.device.type != "cuda":
            return None

        def alloc(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            if dtype != np.uint8:
                raise ValueError(f"pinned batches hold frames (uint8), not {dtype}")
            return torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy()

        return alloc

    def prepare(self, columns: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Columns -> tensors on the training device; safe to call from a prefetch thread.

        On CUDA the copy runs on a side stream from pinned memory and is waited for here,
        so the batch is ready when the training step takes it.
        """
        from pipeline.models import batch_to_tensors

        if self.row_weights is not None:
            columns = {**columns, "row_weights": self.row_weights(columns["targets"], columns["controls"])}
        if self.device.type != "cuda":
            return batch_to_tensors(columns, self.device)
        stream = getattr(self._local, "stream", None)
        if stream is None:  # one copy stream per prefetch thread
            stream = self._local.stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            batch = batch_to_tensors(columns, self.device, pin_memory=True)
        stream.synchronize()
        return batch

    def step(self, columns: dict[str, np.ndarray], with_metrics: bool = True) -> dict[str, float]:
        """One optimisation step on numpy columns (see `step_tensors`)."""
        return self.step_tensors(self.prepare(columns), with_metrics)

    def step_tensors(self, batch: dict[str, torch.Tensor], with_metrics: bool = True) -> dict[str, float]:
        """One optimisation step; with_metrics=False skips every host sync (returns {})."""
        from pipeline.models import compute_loss

        self.model.train()
        if self.device.type == "cuda":  # copied on a side stream: keep the memory until this step is done
            stream = torch.cuda.current_stream(self.device)
            for t in batch.values():
                t.record_stream(stream)
        if self.augment_shift_px:
            from pipeline.train.augment import random_shift

            batch = {**batch, "frames": random_shift(batch["frames"], self.augment_shift_px)}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(batch)
            total, per_output, metrics = compute_loss(self.module, logits, batch, with_metrics=with_metrics)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.lr_schedule[1]:
            for group in self.optimizer.param_groups:
                group["lr"] = decayed_learning_rate(self.lr_schedule[0], self.batches, *self.lr_schedule[1:])
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        self.batches += 1
        if not with_metrics:
            return {}
        out = {"loss": float(total.detach()), "grad_norm": float(grad_norm), "learning_rate": self.learning_rate}
        out.update({f"{name}/loss": float(v.detach()) for name, v in per_output.items()})
        out.update({k: float(v) for k, v in metrics.items()})
        return out

    def weights(self) -> dict[str, torch.Tensor]:
        """Tensors to publish: the model's state dict (its average with `ema_decay`) on the CPU."""
        source = self.module if self.ema is None else self.ema.module
        return {k: v.detach().cpu().contiguous() for k, v in source.state_dict().items()}

    def _raw_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    # -- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        """Write the three files into a fresh folder, then swap it in: a process killed at
        any moment leaves one complete checkpoint (see `resolve_checkpoint`), never a model
        of one batch with the counters of another. `extra` goes into trainer.json; its
        `model` and `config_sha256` also into the weights files' metadata."""
        opt = self.optimizer.state_dict()
        tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, dict[str, Any]] = {}
        for pid, state in opt["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[name] = value
        meta = {
            "batches": self.batches,
            "last_version": self.last_version,
            "param_groups": opt["param_groups"],
            "state_scalars": scalars,
            **(extra or {}),
        }
        staging, old = _sibling(folder, "new"), _sibling(folder, "old")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        # no version: a checkpoint is trained past the last version it published
        about = weights_metadata(str(meta.get("model", "")), self.batches, str(meta.get("config_sha256", "")))
        save_file(self._raw_weights(), str(staging / "model.safetensors"), metadata=about)
        if self.ema is not None:
            save_file(self.weights(), str(staging / "ema.safetensors"), metadata=about)
        save_file(tensors, str(staging / "optimizer.safetensors"))
        (staging / "trainer.json").write_text(json.dumps(meta, indent=1))  # last: marks it complete
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        """Restore model, optimizer and counters; raise WeightsError if the files don't fit."""
        folder = resolve_checkpoint(folder) or folder
        try:
            meta = json.loads((folder / "trainer.json").read_text())
            self.module.load_state_dict(load_file(folder / "model.safetensors", device=str(self.device)))
            if self.ema is not None:  # a checkpoint without one (averaging just turned on) starts it anew
                ema = folder / "ema.safetensors"
                source = load_file(ema, device=str(self.device)) if ema.is_file() else self.module.state_dict()
                self.ema.module.load_state_dict(source)
                self.ema.n_averaged.fill_(1)  # at 0 the next step would copy the model over the average
            flat = load_file(folder / "optimizer.safetensors", device=str(self.device))
        except (OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"{folder}: checkpoint cannot be loaded: {exc}") from None
        state: dict[int, dict[str, Any]] = {}
        for key, value in flat.items():
            pid, _, name = key.partition(".")
            state.setdefault(int(pid), {})[name] = value
        for pid, values in meta.get("state_scalars", {}).items():
            state.setdefault(int(pid), {}).update(values)
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.batches = int(meta["batches"])
        self.last_version = int(meta["last_version"])
        return meta


def _sibling(folder: Path, kind: str) -> Path:
    return folder.with_name(f"{folder.name}.{kind}")


def resolve_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint for `folder`: itself, or, when a save was cut off between its
    two renames, the new copy if it was finished (trainer.json written last), else the old."""
    for candidate in (folder, _sibling(folder, "new"), _sibling(folder, "old")):
        if (candidate / "trainer.json").is_file():
            return candidate
    return None


def checkpoint_exists(folder: Path) -> bool:
    return resolve_checkpoint(folder) is not None
