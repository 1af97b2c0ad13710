"""The replay limit: how often, on average, a sample is drawn before it leaves its buffer.

In the style of DeepMind Reverb's SampleToInsertRatio limiter, as a token bucket per
output buffer, kept in Redis next to the buffer and changed only inside the buffer scripts
(so several trainers and DDP ranks share one limit):
- every inserted sample adds `samples_per_insert` tokens, up to `tolerance` (the error
  buffer: how far ahead of the ratio the trainer may run);
- a draw of n samples from a buffer needs n tokens: when the trainer is ahead of the ratio
  it waits for inserts;
- when the collectors are ahead, tokens stop at `tolerance` and the full buffer evicts its
  oldest samples, so over any stretch draws <= samples_per_insert x inserts + tolerance.

`samples_per_insert = 1` keeps the original's draw-and-delete: a drawn sample leaves the
buffer, which is its own limit (the start threshold is the tolerance; no tokens are
needed). Above 1 a draw leaves the samples in place, and a batch never holds one twice.

Eviction is oldest-first, not most-drawn-first: draws are uniform, so the oldest samples
are also the most drawn on average, and oldest-first bounds the age of the pool at
capacity / insert rate, which is what keeps DAgger's data close to the current policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def start_threshold(capacity: int, start_fraction: float) -> int:
    """Samples a buffer needs before training may draw from it (90% of capacity by default)."""
    return math.ceil(capacity * start_fraction - 1e-9)


def split_batch(batch_size: int, outputs: list[str]) -> list[int]:
    """An equal share of the batch from every output's buffer; the remainder to the first ones."""
    base, extra = divmod(batch_size, len(outputs))
    return [base + (1 if i < extra else 0) for i in range(len(outputs))]


#: the bank of a draw-and-delete buffer: never the reason a draw waits
UNLIMITED = 10**15


@dataclass(frozen=True)
class ReplayLimit:
    """The rate limit of every buffer of a run (see the module docstring)."""

    samples_per_insert: float = 1.0
    #: tokens (samples) a buffer may bank: how far the trainer may run ahead of the ratio
    tolerance: int = UNLIMITED

    @property
    def delete_on_draw(self) -> bool:
        return self.samples_per_insert <= 1.0

    @classmethod
    def auto(cls, samples_per_insert: float, tolerance: int, capacity: int, batch_share: int) -> ReplayLimit:
        """`tolerance = 0` chooses 10% of what a full buffer is worth in draws, and at
        least two batch shares, so the trainer neither stalls on every batch nor banks much."""
        if samples_per_insert <= 1.0:
            return cls(samples_per_insert, UNLIMITED)
        if tolerance <= 0:
            tolerance = max(2 * batch_share, math.ceil(0.1 * capacity * samples_per_insert))
        return cls(samples_per_insert, tolerance)


def deadlock_reasons(limit: ReplayLimit, capacity: int, start_fraction: float, share: int) -> list[str]:
    """Why these settings could stall the trainer for good (empty when they cannot); `share`
    is the most a batch takes from one buffer."""
    reasons = []
    if limit.delete_on_draw:
        return reasons
    if limit.tolerance < share:
        reasons.append(f"buffers.ratio_tolerance = {limit.tolerance} samples is below one batch share ({share}): "
                       "the trainer could never bank enough draws")
    if not limit.delete_on_draw and start_threshold(capacity, start_fraction) < share:
        reasons.append(f"with samples_per_insert > 1 a batch never holds a sample twice, so a buffer must hold "
                       f"the {share} samples of a batch share before the first draw (buffers.capacity = "
                       f"{capacity}, start_fraction = {start_fraction}): raise either")
    return reasons
