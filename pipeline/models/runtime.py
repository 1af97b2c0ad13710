"""The glue the trainer and the player share: columns -> tensors, loss, one prediction.

Both sides go through `batch_to_tensors`, so a frame is never scaled differently at
inference than in training (normalisation happens inside the model).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import structlog
import torch
from torch import Tensor

from pipeline.config import CONTROL_NAMES
from pipeline.games.base import Controls
from pipeline.models.model import DrivingModel

_FLOAT_FIELDS = ("speed", "purpose", "controls", "history", "targets", "row_weights")
log = structlog.get_logger(__name__)


def batch_to_tensors(
    columns: dict[str, np.ndarray], device: str | torch.device = "cpu", pin_memory: bool = False
) -> dict[str, Tensor]:
    """Stacked columns -> tensors on `device`; frames stay uint8 (4x less to copy to a GPU).

    `targets` is included when present (training); `game_time` is metadata and dropped.
    `pin_memory` pins host memory first so the copy to CUDA can overlap compute.
    """
    device = torch.device(device)
    out: dict[str, Tensor] = {}
    names = ["frames", *(n for n in _FLOAT_FIELDS if n in columns)]
    for name in names:
        arr = columns[name]
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.uint8 if name == "frames" else np.float32))
        if pin_memory and device.type == "cuda" and not t.is_pinned():
            t = t.pin_memory()
        out[name] = t.to(device, non_blocking=pin_memory)
    return out


def compute_loss(
    model: DrivingModel, logits: dict[str, Tensor], batch: dict[str, Tensor], with_metrics: bool = True
) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
    """(total, {output: loss}, {"output/metric": value}); total = sum of loss_weight * loss,
    each loss a mean over the rows, weighted by the batch's `row_weights` when it has them.

    Metrics (`mae`, `accuracy`) cost a device sync each; pass `with_metrics=False` on the
    steps that are not logged.
    """
    targets, controls = batch["targets"], batch["controls"]
    row_weights = batch.get("row_weights")  # (rows, heads) from `BinWeights`: balancing at training time
    losses: dict[str, Tensor] = {}
    metrics: dict[str, float] = {}
    total: Tensor | None = None
    for k, head in enumerate(model.heads):
        encoded = head.encode(targets, controls)
        loss = head.loss(logits[head.name], encoded, None if row_weights is None else row_weights[:, k])
        losses[head.name] = loss
        weighted = loss * head.config.loss_weight
        total = weighted if total is None else total + weighted
        if with_metrics:
            for key, value in head.metrics(logits[head.name].detach(), targets, controls).items():
                metrics[f"{head.name}/{key}"] = value
    assert total is not None
    return total, losses, metrics


def _add_batch_axis(context: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[None] for k, v in context.items() if k != "game_time"}


class GraphedForward:
    """Batch-1 inference replayed from a CUDA graph: one launch instead of hundreds of kernels.

    At batch 1 a deep backbone is bound by kernel-launch overhead, not by the GPU; a graph
    captured once per (model, input shapes) removes that. bf16 autocast as in training.
    """

    def __init__(self, model: DrivingModel, batch: dict[str, Tensor]) -> None:
        self.shapes = _shapes(batch)
        self.inputs = {k: v.clone() for k, v in batch.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(3):  # warm up cuDNN autotuning outside the capture
                model(self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"), torch.autocast("cuda", dtype=torch.bfloat16):
            self.outputs = model(self.inputs)

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        for name, value in batch.items():
            self.inputs[name].copy_(value)
        self.graph.replay()
        return {name: value.float() for name, value in self.outputs.items()}


_GRAPHS: weakref.WeakKeyDictionary[DrivingModel, GraphedForward] = weakref.WeakKeyDictionary()


def _shapes(batch: dict[str, Tensor]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted((k, tuple(v.shape)) for k, v in batch.items()))


def _forward(model: DrivingModel, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The model's forward for inference: through a CUDA graph on a GPU, eager elsewhere."""
    device = batch["frames"].device
    if device.type != "cuda" or not getattr(model, "use_cuda_graph", True):
        return model(batch)
    graphed = _GRAPHS.get(model)
    if graphed is None or graphed.shapes != _shapes(batch):
        try:
            graphed = GraphedForward(model, batch)
        except RuntimeError as exc:  # an op that cannot be captured: stay eager for this model
            log.warning("cuda_graph_unavailable", error=str(exc)[:300])
            model.use_cuda_graph = False  # type: ignore[assignment]
            return model(batch)
        _GRAPHS[model] = graphed
    return graphed(batch)


def predict(model: DrivingModel, context: dict[str, Any]) -> tuple[dict[str, list[float]], Controls]:
    """One context from `ContextBuilder.context()` -> (decoded values per output, merged Controls).

    `raw[output]` lists the decoded values of the controls that output drives, in
    CONTROL_NAMES order. Outputs that drive the same control are averaged; a control no
    output drives is 0.
    """
    was_training = model.training
    if was_training:  # eval()/train() walk every module: only switch when needed (hot loop)
        model.eval()
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            batch = batch_to_tensors(_add_batch_axis(context), device)
            logits = _forward(model, batch)
            decoded = {head.name: head.decode(logits[head.name], batch["controls"]) for head in model.heads}
            order = [(name, c) for name, d in decoded.items() for c in CONTROL_NAMES if c in d]
            # one copy to the host for all values: on a GPU each float() would wait on its own
            values = torch.stack([decoded[n][c][0].float() for n, c in order]).tolist() if order else []
    finally:
        if was_training:
            model.train()
    raw: dict[str, list[float]] = {head.name: [] for head in model.heads}
    sums = dict.fromkeys(CONTROL_NAMES, 0.0)
    counts = dict.fromkeys(CONTROL_NAMES, 0)
    for (name, control), value in zip(order, values, strict=True):
        raw[name].append(value)
        sums[control] += value
        counts[control] += 1
    merged = [sums[c] / counts[c] if counts[c] else 0.0 for c in CONTROL_NAMES]
    return raw, Controls.from_array(merged)
