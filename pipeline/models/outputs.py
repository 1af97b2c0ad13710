"""Output types: one declaration in the config decides target encoding, loss, metrics, decoding and bins.

    regression      size 1; L1 loss by default (the reference logged MAE; L1 fits the median, so a
                    bimodal target such as "full left or full right" is not averaged into
                    "straight" as MSE would, and the loss is the metric); `loss = "l2"` fits the
                    mean instead. Decode clips to range.
    classification  `classes` values evenly spaced over the range (endpoints included);
                    cross-entropy on the nearest class; decode = expected value of the softmax
                    (smooth control for a gamepad), `accuracy` = argmax hits the nearest class.
    discrete_delta  classes over `deltas` applied to the current control; target = the delta
                    nearest to target - control; decode = control + argmax delta, clipped
                    (argmax, so tiny probabilities of big deltas do not make the value drift).
    keys            independent keys (w/a/s/d) with BCE; a key is pressed when the target
                    passes `key_threshold` in its direction; decode = P(w) - P(s) and
                    P(d) - P(a), proportional like seed 004's press durations.

Control vectors are ordered as `pipeline.config.CONTROL_NAMES`. Balancing bins come from
`pipeline.collect.bins.Binning` (torch-free), which every head also answers for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.collect.bins import KEY_MEANINGS, Binning, class_centres, control_index
from pipeline.config import CONTROL_NAMES, OutputConfig


class OutputHead:
    """Base of every output type; subclasses fill in encode/loss/decode/metrics."""

    size: int = 1

    def __init__(self, cfg: OutputConfig) -> None:
        self.name = cfg.name
        self.config = cfg
        self.binning = Binning(cfg)
        self.ci = control_index(cfg)
        self.lo, self.hi = (float(v) for v in cfg.range)

    # -- balancing (delegated to the torch-free bins) ------------------------------------
    @property
    def num_bins(self) -> int:
        return self.binning.num_bins

    def balance_value(self, targets: Sequence[float] | np.ndarray, controls: Sequence[float] | np.ndarray) -> float:
        return self.binning.balance_value(targets, controls)

    def bin_edges(self) -> list[float]:
        return self.binning.bin_edges()

    def bin_index(self, value: float) -> int:
        return self.binning.bin_index(value)

    def bin_labels(self) -> list[str]:
        return list(self.binning.labels)

    # -- learning ------------------------------------------------------------------------
    def encode(self, targets: Tensor, controls: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, logits: Tensor, encoded: Tensor, row_weights: Tensor | None = None) -> Tensor:
        """The batch's loss: the mean over its rows, weighted by `row_weights` when given."""
        raise NotImplementedError

    def decode(self, logits: Tensor, controls: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def controls_driven(self) -> tuple[str, ...]:
        return CONTROL_NAMES if self.ci < 0 else (CONTROL_NAMES[self.ci],)

    @torch.no_grad()
    def metrics(self, logits: Tensor, targets: Tensor, controls: Tensor) -> dict[str, float]:
        """`mae` of the decoded control value(s) against the targets; subclasses add accuracy."""
        decoded = self.decode(logits, controls)
        errs = [(decoded[c] - targets[:, CONTROL_NAMES.index(c)]).abs().mean() for c in decoded]
        return {"mae": float(torch.stack(errs).mean())}

    def _clip(self, values: Tensor) -> Tensor:
        return values.clamp(max(self.lo, -1.0), min(self.hi, 1.0))


def _mean(per_row: Tensor, row_weights: Tensor | None) -> Tensor:
    return per_row.mean() if row_weights is None else (per_row * row_weights.float()).mean()


class RegressionHead(OutputHead):
    """One linear unit; no tanh, so the edges of the range stay reachable without saturating."""

    size = 1

    def encode(self, targets: Tensor, controls: Tensor) -> Tensor:
        return targets[:, self.ci].clamp(self.lo, self.hi).float()

    def loss(self, logits: Tensor, encoded: Tensor, row_weights: Tensor | None = None) -> Tensor:
        per_row = F.mse_loss if self.config.loss == "l2" else F.l1_loss
        return _mean(per_row(logits[:, 0].float(), encoded, reduction="none"), row_weights)

    def decode(self, logits: Tensor, controls: Tensor) -> dict[str, Tensor]:
        return {CONTROL_NAMES[self.ci]: self._clip(logits[:, 0].float())}


class _ClassesHead(OutputHead):
    """Shared by classification and discrete delta: cross-entropy over fixed class values."""

    values: Tensor

    def loss(self, logits: Tensor, encoded: Tensor, row_weights: Tensor | None = None) -> Tensor:
        return _mean(F.cross_entropy(logits.float(), encoded, reduction="none"), row_weights)

    def _nearest(self, x: Tensor) -> Tensor:
        values = self.values.to(x.device)
        return (x[:, None] - values[None, :]).abs().argmin(dim=1)

    @torch.no_grad()
    def metrics(self, logits: Tensor, targets: Tensor, controls: Tensor) -> dict[str, float]:
        out = super().metrics(logits, targets, controls)
        hits = logits.argmax(dim=1) == self.encode(targets, controls)
        out["accuracy"] = float(hits.float().mean())
        return out


class ClassificationHead(_ClassesHead):
    def __init__(self, cfg: OutputConfig) -> None:
        super().__init__(cfg)
        self.values = torch.tensor(class_centres(cfg), dtype=torch.float32)
        self.size = len(self.values)

    def encode(self, targets: Tensor, controls: Tensor) -> Tensor:
        return self._nearest(targets[:, self.ci].float())

    def decode(self, logits: Tensor, controls: Tensor) -> dict[str, Tensor]:
        probs = logits.float().softmax(dim=1)
        value = (probs * self.values.to(logits.device)).sum(dim=1)  # not a matmul: autocast would round it
        return {CONTROL_NAMES[self.ci]: self._clip(value)}


class DiscreteDeltaHead(_ClassesHead):
    def __init__(self, cfg: OutputConfig) -> None:
        super().__init__(cfg)
        self.values = torch.tensor(sorted(cfg.deltas), dtype=torch.float32)
        self.size = len(self.values)

    def encode(self, targets: Tensor, controls: Tensor) -> Tensor:
        return self._nearest((targets[:, self.ci] - controls[:, self.ci]).float())

    def decode(self, logits: Tensor, controls: Tensor) -> dict[str, Tensor]:
        delta = self.values.to(logits.device)[logits.argmax(dim=1)]
        value = controls[:, self.ci].float() + delta
        return {CONTROL_NAMES[self.ci]: self._clip(value)}


class KeysHead(OutputHead):
    """Independent binary keys; both controls decoded from the key probabilities."""

    def __init__(self, cfg: OutputConfig) -> None:
        super().__init__(cfg)
        self.keys = list(cfg.keys)
        self.size = len(self.keys)
        self.threshold = float(cfg.key_threshold)
        self.meanings = [KEY_MEANINGS[key] for key in self.keys]  # (control index, sign) per key

    def encode(self, targets: Tensor, controls: Tensor) -> Tensor:
        # elementwise, not a matmul: autocast would round targets near the threshold
        cols = [sign * targets[:, ci].float() > self.threshold for ci, sign in self.meanings]
        return torch.stack(cols, dim=1).float()

    def loss(self, logits: Tensor, encoded: Tensor, row_weights: Tensor | None = None) -> Tensor:
        per_row = F.binary_cross_entropy_with_logits(logits.float(), encoded, reduction="none").mean(dim=1)
        return _mean(per_row, row_weights)

    def probabilities(self, logits: Tensor) -> Tensor:
        return logits.float().sigmoid()

    def decode(self, logits: Tensor, controls: Tensor) -> dict[str, Tensor]:
        probs = self.probabilities(logits)
        values = [torch.zeros_like(probs[:, 0]) for _ in CONTROL_NAMES]
        for k, (ci, sign) in enumerate(self.meanings):
            values[ci] = values[ci] + sign * probs[:, k]
        return {name: values[i].clamp(-1.0, 1.0) for i, name in enumerate(CONTROL_NAMES)}

    @torch.no_grad()
    def metrics(self, logits: Tensor, targets: Tensor, controls: Tensor) -> dict[str, float]:
        out = super().metrics(logits, targets, controls)
        hits = (logits > 0).float() == self.encode(targets, controls)
        out["accuracy"] = float(hits.float().mean())
        return out


HEAD_TYPES: dict[str, type[OutputHead]] = {
    "regression": RegressionHead,
    "classification": ClassificationHead,
    "discrete_delta": DiscreteDeltaHead,
    "keys": KeysHead,
}


def build_output(cfg: OutputConfig) -> OutputHead:
    return HEAD_TYPES[cfg.type](cfg)


def build_outputs(outputs: Sequence[OutputConfig]) -> list[OutputHead]:
    """One head per declared output, in config order."""
    return [build_output(cfg) for cfg in outputs]
