"""The trainer's extra TensorBoard figures: buffer fill at every log, the Convcam every N batches.

The Trainer already logs `loss/total`, `<output>/loss`, `<output>/mae` (and other
metrics), `learning_rate`, `grad_norm`, `trainer/batches_per_s` and `trainer/samples_per_s`;
`TrainerMonitor` is its `on_log` hook and adds

- `buffers/<output>/fill` (fraction of capacity, 0..1) and `buffers/min_fill`,
- `convcam` (the backbone's last feature maps of the batch's first sample, tiled; RGB for a
  dual backbone) and `convcam/input` (that sample's newest hood frame),

so the fill that gates training and the CNN's progress sit next to the loss curve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import structlog

from pipeline.models import convcam
from pipeline.wire.redis_conn import CONNECTION_ERRORS

log = structlog.get_logger(__name__)
#: Convcam images are upscaled (nearest) to at least this width for TensorBoard's viewer.
TB_CONVCAM_MIN_WIDTH = 512


class ScalarImageWriter(Protocol):
    """The part of `torch.utils.tensorboard.SummaryWriter` used here."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> None: ...

    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None,
                  dataformats: str = "CHW") -> None: ...


class TrainerMonitor:
    """Callable as `Trainer.on_log(batch_n, metrics, columns)`; never raises on a Redis outage."""

    def __init__(self, writer: ScalarImageWriter, fills: Callable[[], Mapping[str, int]], capacity: int,
                 model: Any, convcam_every: int) -> None:
        self.writer = writer
        self.fills = fills
        self.capacity = max(1, int(capacity))
        self.model = model
        self.convcam_every = max(1, int(convcam_every))
        self._last_convcam: int | None = None

    def __call__(self, batch_n: int, metrics: Mapping[str, float], columns: Mapping[str, np.ndarray]) -> None:
        self.log_fill(batch_n)
        if self._convcam_due(batch_n):
            self.log_convcam(batch_n, columns)

    def log_fill(self, batch_n: int) -> None:
        try:
            fills = dict(self.fills())
        except CONNECTION_ERRORS as exc:
            log.warning("buffer_fill_unavailable", error=str(exc)[:200])
            return
        fractions = {name: n / self.capacity for name, n in fills.items()}
        for name, frac in fractions.items():
            self.writer.add_scalar(f"buffers/{name}/fill", frac, batch_n)
        if fractions:
            self.writer.add_scalar("buffers/min_fill", min(fractions.values()), batch_n)

    def _convcam_due(self, batch_n: int) -> bool:
        """True on the first log and whenever a multiple of `convcam_every` was passed since."""
        if self._last_convcam is None or batch_n // self.convcam_every > self._last_convcam // self.convcam_every:
            self._last_convcam = batch_n
            return True
        return False

    def log_convcam(self, batch_n: int, columns: Mapping[str, np.ndarray]) -> None:
        image = convcam.render(getattr(self.model, "last_features", None))
        if image is None:
            return
        image = convcam.upscale(image, TB_CONVCAM_MIN_WIDTH)
        self.writer.add_image("convcam", image, batch_n, dataformats="HWC" if image.ndim == 3 else "HW")
        frames = columns.get("frames")
        if frames is not None and np.ndim(frames) == 5 and len(frames):
            self.writer.add_image("convcam/input", np.asarray(frames[0, -1]), batch_n, dataformats="HWC")
