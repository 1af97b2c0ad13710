"""`charles bench model`: training samples/s and predictions/s at batch 1 for one config's model.

Measures what the trainer and the player do per step, on synthetic samples of the
config's shapes: `batch_to_tensors` + forward + loss + backward + AdamW step (bfloat16
autocast on CUDA, as the trainer does), and `predict` on one context (the player's call,
loop overhead included). No ceiling: the figures are compared across configs and machines.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipeline.bench import result, timed
from pipeline.config import load_config
from pipeline.wire.schema import SampleSchema, empty_columns


def _columns(cfg: Any, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    cols = empty_columns(SampleSchema.from_config(cfg), n)
    cols["frames"][:] = rng.integers(0, 256, cols["frames"].shape, dtype=np.uint8)
    cols["speed"][:] = rng.uniform(0, 30, n)
    cols["purpose"][:, 0] = rng.uniform(0, 500, n)
    cols["controls"][:] = rng.uniform(-1, 1, (n, 2))
    cols["targets"][:] = rng.uniform(-1, 1, (n, 2))
    return cols


def run(config_path: str | None = None, seconds: float = 10.0, device: str | None = None, **_: Any) -> dict[str, Any]:
    """Build the config's model and time a training step and a single prediction."""
    import torch

    from pipeline.models import batch_to_tensors, build_model, compute_loss, predict
    from pipeline.models.loading import pick_device

    cfg = load_config(config_path)
    name = device or cfg.trainer.device
    dev = pick_device(name)
    hw = (cfg.game.hood_height, cfg.game.hood_width)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, hw).to(dev)
    batch_size = cfg.trainer.batch_size
    cols = _columns(cfg, batch_size)
    amp = cfg.trainer.amp and dev.type == "cuda"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.trainer.learning_rate)

    def train_step() -> None:
        model.train()
        batch = batch_to_tensors(cols, dev, pin_memory=dev.type == "cuda")
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            total, _, _ = compute_loss(model, model(batch), batch, with_metrics=False)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    context = {k: v[0] for k, v in cols.items() if k != "targets"}

    def predict_once() -> None:
        predict(model, context)

    for _ in range(3):  # warm-up: allocator, cuDNN autotuning
        train_step()
        predict_once()
    steps, train_s = timed(train_step, seconds)
    preds, pred_s = timed(predict_once, seconds)
    train_rate = steps * batch_size / train_s
    details = {
        "train_samples_per_s": round(train_rate, 1),
        "forward_per_s_batch1": round(preds / pred_s, 1),
        "batch_size": batch_size,
        "params": model.num_parameters(),
        "trainable_params": model.num_parameters(trainable_only=True),
        "backbone": cfg.model.backbone,
        "image_hw": list(hw),
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "amp": amp,
        "torch_threads": torch.get_num_threads(),
        "config": str(config_path or "configs/default.toml"),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return result(name="model", value=train_rate, unit="samples/s", ceiling=None, details=details)
