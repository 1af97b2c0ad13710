"""Balancing on the collector: turn a stream of samples into balanced sample sets per output.

Without balancing the buffers fill with "straight ahead, full throttle" and the model
learns only that (the pygta5 complaint). A *round* is a set of bins, each with room for
`samples_per_bin` samples; a round is sent when every bin is full, or when it is older
than `round_timeout_s` game seconds and at least `min_bins_filled` of its bins hold a
sample. `flush()` at episode end sends the rounds that meet that share and drops the rest.
Every row handed to `add` is a candidate: the collector applies `sample_every` itself
(it skips building the context of the other ticks).

    v3 (default)  one round per output, over that output's bins. Every sample carries all
                  outputs' targets (the other outputs are slightly unbalanced, as in the
                  reference). A sample joins at most ONE round, so buffers never hold the
                  same frame twice: among the outputs whose bin for it has room, the one
                  where that bin is rarest so far (fewest candidates seen in it) takes it
                  (ties: config order), so rare samples go where they are scarce.
    v1            one round over the combinations of every output's bins. A completed
                  round is sent to one output's stream, round-robin over the outputs, so
                  every buffer receives whole combination-balanced sets in equal share.
    v4            v3, and when the sample's bin is already full in a round, it replaces the
                  member of that bin whose other-output bins are most common in the round,
                  if that strictly lowers the round's imbalance of the other outputs.

With `setting_off_bin` (v3/v4), a setting-off tick (`is_setting_off`) takes a bin of its own, one
beyond every output's bins: it no longer competes with every full-throttle tick of the round for
that bin's places (docs/evaluation.md "(s)"). The extra bin does not count towards a round's
fullness or filled share, so rounds complete and time out as before.

Bins come from objects with `name`, `num_bins` and `bin_of(targets, controls)` or
`balance_value` + `bin_index`: an `OutputHead` or a torch-free `pipeline.collect.bins.Binning`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import structlog

from pipeline.config import BalancingConfig

Row = dict[str, np.ndarray]
Completed = list[tuple[str, list[Row]]]
log = structlog.get_logger(__name__)


class BinSource(Protocol):
    """What the balancer needs of an output: its name and its bins."""

    name: str

    @property
    def num_bins(self) -> int: ...

    def balance_value(self, targets: Any, controls: Any) -> float: ...

    def bin_index(self, value: float) -> int: ...


SETTING_OFF_MAX_SPEED = 3.0  # m/s: below this, a throttle over SETTING_OFF_MIN_THROTTLE is setting off
SETTING_OFF_MIN_THROTTLE = 0.2


def is_setting_off(row: Row) -> bool:
    """A tick of getting going: slow, with the throttle (the first target) pressed."""
    return abs(float(row["speed"])) < SETTING_OFF_MAX_SPEED and float(row["targets"][0]) > SETTING_OFF_MIN_THROTTLE


class _Round:
    """One balancing round: `slots[b]` holds the rows (with their per-output bins) of bin b;
    slots past the first `regular` (the setting-off bin) do not count towards full or filled."""

    def __init__(self, num_bins: int, started: float, extra: int = 0) -> None:
        self.slots: list[list[tuple[Row, tuple[int, ...]]]] = [[] for _ in range(num_bins + extra)]
        self.regular = num_bins
        self.started = started

    def filled_share(self) -> float:
        return sum(1 for s in self.slots[: self.regular] if s) / self.regular

    def full(self, per_bin: int) -> bool:
        return all(len(s) >= per_bin for s in self.slots[: self.regular])

    def rows(self) -> list[Row]:
        return [row for slot in self.slots for row, _ in slot]

    def size(self) -> int:
        return sum(len(s) for s in self.slots)


class Balancer:
    """Base: bins of every output, the candidate filter, timeouts and flushing."""

    version = "base"

    def __init__(self, cfg: BalancingConfig, outputs: Sequence[BinSource]) -> None:
        if not outputs:
            raise ValueError("a balancer needs at least one output")
        self.cfg = cfg
        self.outputs = list(outputs)
        self.names = [o.name for o in self.outputs]
        #: 1 with `setting_off_bin`: the bin index num_bins of every output holds setting off
        self.extra = int(cfg.setting_off_bin)
        #: candidates seen per output per bin (v3/v4 send rare samples where they are scarce)
        self.counts = [np.zeros(o.num_bins + self.extra, dtype=np.int64) for o in self.outputs]
        self.sent = {name: 0 for name in self.names}

    def bins_of(self, row: Row) -> tuple[int, ...]:
        if self.extra and is_setting_off(row):
            return tuple(o.num_bins for o in self.outputs)
        targets, controls = row["targets"], row["controls"]
        return tuple(o.bin_index(o.balance_value(targets, controls)) for o in self.outputs)

    def add(self, row: Row) -> Completed:
        """Offer one sample; return the sample sets it completed (or timed out)."""
        bins = self.bins_of(row)
        for i, b in enumerate(bins):
            self.counts[i][b] += 1
        now = float(row["game_time"])
        out = self._place(row, bins, now)
        out += self._expire(now)
        return out

    def flush(self) -> Completed:
        """Episode end: send rounds with at least `min_bins_filled` of their bins, drop the rest."""
        out: Completed = []
        for key, rnd in self._rounds().items():
            if rnd is None or rnd.size() == 0:
                continue
            if rnd.filled_share() >= self.cfg.min_bins_filled - 1e-12:
                out += self._send(key, rnd)
            else:
                log.debug("balancing_round_dropped", round=key, rows=rnd.size(), share=rnd.filled_share())
        self._reset_rounds()
        return out

    def _expire(self, now: float) -> Completed:
        out: Completed = []
        for key, rnd in self._rounds().items():
            if rnd is None or now - rnd.started < self.cfg.round_timeout_s:
                continue
            if rnd.size() and rnd.filled_share() >= self.cfg.min_bins_filled - 1e-12:
                out += self._send(key, rnd)
                self._new_round(key, now)
        return out

    def _send(self, key: Any, rnd: _Round) -> Completed:
        name = self._destination(key)
        rows = rnd.rows()
        self.sent[name] += len(rows)
        log.debug("balancing_round_done", output=name, rows=len(rows), share=round(rnd.filled_share(), 3))
        return [(name, rows)]

    # -- per version ------------------------------------------------------------------------
    def _place(self, row: Row, bins: tuple[int, ...], now: float) -> Completed:
        raise NotImplementedError

    def _rounds(self) -> dict[Any, _Round | None]:
        raise NotImplementedError

    def _new_round(self, key: Any, now: float) -> None:
        raise NotImplementedError

    def _reset_rounds(self) -> None:
        raise NotImplementedError

    def _destination(self, key: Any) -> str:
        raise NotImplementedError


class PerOutputBalancer(Balancer):
    """v3: one round per output; a sample joins the round where its bin is rarest and has room."""

    version = "v3"

    def __init__(self, cfg: BalancingConfig, outputs: Sequence[BinSource]) -> None:
        super().__init__(cfg, outputs)
        self.rounds: list[_Round | None] = [None] * len(self.outputs)

    def _rounds(self) -> dict[Any, _Round | None]:
        return dict(enumerate(self.rounds))

    def _new_round(self, key: Any, now: float) -> None:
        self.rounds[key] = _Round(self.outputs[key].num_bins, now, self.extra)

    def _reset_rounds(self) -> None:
        self.rounds = [None] * len(self.outputs)

    def _destination(self, key: Any) -> str:
        return self.names[key]

    def _round(self, i: int, now: float) -> _Round:
        rnd = self.rounds[i]
        if rnd is None:
            rnd = self.rounds[i] = _Round(self.outputs[i].num_bins, now, self.extra)
        return rnd

    def _rarity_order(self, bins: tuple[int, ...]) -> list[int]:
        """Outputs ordered by how rare this sample's bin is for them (share of candidates seen)."""
        share = [self.counts[i][b] / max(1, self.counts[i].sum()) for i, b in enumerate(bins)]
        return sorted(range(len(self.outputs)), key=lambda i: (share[i], i))

    def _place(self, row: Row, bins: tuple[int, ...], now: float) -> Completed:
        per_bin = self.cfg.samples_per_bin
        for i in self._rarity_order(bins):
            rnd = self._round(i, now)
            if len(rnd.slots[bins[i]]) < per_bin:
                rnd.slots[bins[i]].append((row, bins))
                return self._complete_if_full(i, now)
        return self._replace(row, bins, now)

    def _replace(self, row: Row, bins: tuple[int, ...], now: float) -> Completed:
        return []

    def _complete_if_full(self, i: int, now: float) -> Completed:
        rnd = self.rounds[i]
        if rnd is not None and rnd.full(self.cfg.samples_per_bin):
            out = self._send(i, rnd)
            self.rounds[i] = None
            return out
        return []


class SwapBalancer(PerOutputBalancer):
    """v4: v3 plus swaps that improve the other outputs' balance inside a round."""

    version = "v4"

    def _replace(self, row: Row, bins: tuple[int, ...], now: float) -> Completed:
        for i in self._rarity_order(bins):
            rnd = self.rounds[i]
            if rnd is None:
                continue
            slot = rnd.slots[bins[i]]
            counts = self._other_counts(rnd, i)
            worst = max(range(len(slot)), key=lambda k: self._score(counts, slot[k][1], i))
            old = slot[worst][1]
            before = _imbalance(counts)
            for j, (o, n) in enumerate(zip(old, bins, strict=True)):
                if j != i:
                    counts[j][o] -= 1
                    counts[j][n] += 1
            if _imbalance(counts) < before - 1e-12:
                slot[worst] = (row, bins)
                return []
        return []

    def _other_counts(self, rnd: _Round, i: int) -> list[np.ndarray]:
        counts = [np.zeros(o.num_bins + self.extra, dtype=np.int64) for o in self.outputs]
        for slot in rnd.slots:
            for _, b in slot:
                for j, bj in enumerate(b):
                    if j != i:
                        counts[j][bj] += 1
        return counts

    @staticmethod
    def _score(counts: list[np.ndarray], bins: tuple[int, ...], i: int) -> int:
        return sum(int(counts[j][b]) for j, b in enumerate(bins) if j != i)


def _imbalance(counts: list[np.ndarray]) -> float:
    """Sum over outputs of squared bin counts: lowest when a round spreads over the bins."""
    return float(sum(int((c.astype(np.int64) ** 2).sum()) for c in counts))


class CombinationBalancer(Balancer):
    """v1: one round over every combination of the outputs' bins; sets go round-robin."""

    version = "v1"

    def __init__(self, cfg: BalancingConfig, outputs: Sequence[BinSource]) -> None:
        super().__init__(cfg, outputs)
        self.shape = tuple(o.num_bins for o in self.outputs)
        self.num_bins = math.prod(self.shape)
        self.round: _Round | None = None
        self._next = 0
        if self.num_bins * cfg.samples_per_bin > 1000:
            log.warning("balancing_v1_many_combinations", combinations=self.num_bins,
                        hint="v1 rounds this large rarely fill; give the outputs coarse `bins`")

    def _rounds(self) -> dict[Any, _Round | None]:
        return {0: self.round}

    def _new_round(self, key: Any, now: float) -> None:
        self.round = _Round(self.num_bins, now)

    def _reset_rounds(self) -> None:
        self.round = None

    def _destination(self, key: Any) -> str:
        name = self.names[self._next % len(self.names)]
        self._next += 1
        return name

    def _place(self, row: Row, bins: tuple[int, ...], now: float) -> Completed:
        if self.round is None:
            self.round = _Round(self.num_bins, now)
        slot = self.round.slots[int(np.ravel_multi_index(bins, self.shape))]
        if len(slot) >= self.cfg.samples_per_bin:
            return []
        slot.append((row, bins))
        if self.round.full(self.cfg.samples_per_bin):
            out = self._send(0, self.round)
            self.round = None
            return out
        return []


BALANCERS: dict[str, type[Balancer]] = {"v1": CombinationBalancer, "v3": PerOutputBalancer, "v4": SwapBalancer}


def make_balancer(cfg: BalancingConfig, heads: Sequence[BinSource]) -> Balancer:
    """The balancer the config names, over the bins of these outputs (heads or Binnings)."""
    return BALANCERS[cfg.version](cfg, heads)
