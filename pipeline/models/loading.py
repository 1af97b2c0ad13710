"""Getting a model ready to drive: its device, and its weights from a file or a published blob."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import structlog
import torch

from pipeline.config import Config
from pipeline.errors import WeightsError

log = structlog.get_logger(__name__)


def build_model_from(cfg: Config, tensors: dict[str, Any], device: Any = "cpu") -> Any:
    """The configured model with these weights on `device`, or WeightsError when they do not
    fit it. It is built on the device: a random CPU initialisation of 23 M parameters that
    the weights overwrite anyway would cost a player half a second per new version."""
    from pipeline.models import build_model

    with torch.device(device):
        model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, KeyError) as exc:
        raise WeightsError(f"weights do not fit the configured model {cfg.run.name!r}: {str(exc)[:300]}") from None
    return model.eval()


def read_weights_file(path: str | Path, sha256: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and metadata of a safetensors file; anything else (pickle, truncated, forged) is refused."""
    from pipeline.wire.weights import from_blob

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights: {exc}") from None
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256.lower():
        raise WeightsError(f"{path}: sha256 is {hashlib.sha256(blob).hexdigest()}, expected {sha256}; refusing it")
    try:
        tensors = from_blob(blob)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc} (only safetensors files are accepted)") from None
    return tensors, _metadata(blob)


def _metadata(blob: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob that `from_blob` already accepted."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def pick_device(name: str, fall_back: bool = False) -> torch.device:
    """`auto`: CUDA when there is a GPU, else the CPU. With `fall_back` (players: a config
    written for a GPU machine still drives on a laptop) an absent CUDA becomes the CPU, warned;
    without it (the trainer) asking for CUDA where there is none fails at once."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if fall_back and device.type == "cuda" and not torch.cuda.is_available():
        log.warning("cuda_unavailable", asked=name, using="cpu")
        return torch.device("cpu")
    return device
