"""Balancing at training time: per-row loss weights from how common each row's bin is.

Balanced collection rounds keep at most `samples_per_bin` a bin each, which throws frames
away and over-represents the rare bins (braking held 45% of the buffers with 22 bins,
docs/evaluation.md "(y)"; the default collects unbalanced since "(ab)"). The shipped model
was trained the other way
(`scripts/train_default.py`): every frame kept, rarer steering seen more often, as
1 / sqrt(frequency) of its bin. `BinWeights` does that for the live trainer, per output
(`[[outputs]] bin_weighting`), over the output's own balancing bins: a row's weight in an
output's loss is frequency(bin) ** -power, normalised to a mean of 1 in the batch, with
frequencies counted over the rows drawn recently (draws are uniform, so they follow the
buffers). Power 0.5 is the offline recipe's 1 / sqrt; 1 balances fully; 0 leaves the output
unweighted.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from pipeline.collect.bins import Binning, build_binnings
from pipeline.config import OutputConfig

#: Rows the frequencies are counted over (an exponential window): about two 1000-row buffers.
WINDOW_ROWS = 2048


class BinWeights:
    """Loss weights of a batch's rows, one column per output (in `binnings` order)."""

    def __init__(self, binnings: Sequence[Binning], powers: Sequence[float], window_rows: int = WINDOW_ROWS) -> None:
        if len(powers) != len(binnings) or any(not 0 <= p <= 1 for p in powers):
            raise ValueError(f"one power in [0, 1] per output, got {list(powers)} for {len(binnings)} outputs")
        self.binnings = list(binnings)
        self.powers = list(powers)
        self.keep = 1.0 - 1.0 / window_rows  # per row: old counts fade over ~window_rows
        self.counts = [np.zeros(b.num_bins) for b in self.binnings]
        self._lock = threading.Lock()  # a GPU trainer prepares batches in two threads

    @classmethod
    def for_outputs(cls, outputs: Sequence[OutputConfig]) -> BinWeights | None:
        """The weights a config asks for; None when no output is weighted."""
        if not any(o.bin_weighting for o in outputs):
            return None
        return cls(build_binnings(outputs), [o.bin_weighting for o in outputs])

    def __call__(self, targets: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """(rows, outputs) float32 weights; counts these rows first, so a bin never seen is
        never divided by zero."""
        rows = len(targets)
        out = np.ones((rows, len(self.binnings)), dtype=np.float32)
        with self._lock:
            for k, (binning, power) in enumerate(zip(self.binnings, self.powers, strict=True)):
                if not power:
                    continue
                bins = binning.bins_of(targets, controls)
                counts = self.counts[k]
                counts *= self.keep ** rows
                counts += np.bincount(bins, minlength=len(counts))
                w = (counts[bins] / counts.sum()) ** -power
                out[:, k] = w / w.mean()
        return out
