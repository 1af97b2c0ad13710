"""Models built from config: backbones by name, encoders for every input, one head per output.

    build_model(model_cfg, inputs_cfg, outputs_cfg, image_hw) -> DrivingModel
    batch_to_tensors(columns, device, pin_memory=False) -> dict[str, Tensor]
    compute_loss(model, logits, batch) -> (total, {output: loss}, {"output/metric": value})
    predict(model, context) -> (raw, Controls)
"""

from __future__ import annotations

from pipeline.models.backbones import TIMM_ALIASES, backbone_kind, build_backbone
from pipeline.models.model import DrivingModel, build_model
from pipeline.models.runtime import batch_to_tensors, compute_loss, predict

__all__ = [
    "TIMM_ALIASES",
    "DrivingModel",
    "backbone_kind",
    "batch_to_tensors",
    "build_backbone",
    "build_model",
    "compute_loss",
    "predict",
]
