"""Balancing bins of one output, derived from its declaration; torch-free so collectors stay light.

Every output maps a sample to one number (`balance_value`) and that number to one bin
(`bin_index`). What the number is depends on the output's type:

    regression       the target value of its control
    classification   the target value; one bin per class unless `bins` is set
    discrete_delta   target - current control; one bin per delta class unless `bins` is set
    keys             the index of the key combination the target presses (e.g. 9 for w/a/s/d)

Value bins (regression, or any type with `bins` set) follow the reference's v2/v3 bins:
0.1-wide intervals plus the exact range endpoints as bins of their own (the NPC often
holds a control at exactly -1 or 1). `bins` gives the interval edges instead; an edge
listed twice is a bin for exactly that value, so the v1 steering bins
`[-1, (-1,-.6), (-.6,-.2), (-.2,0), 0, (0,.2), (.2,.6), (.6,1), 1]` are written
`bins = [-1, -0.6, -0.2, 0, 0, 0.2, 0.6, 1]`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from pipeline.config import CONTROL_NAMES, OutputConfig
from pipeline.errors import ConfigError

#: What each supported key means: (index of the control in CONTROL_NAMES, sign that presses it).
KEY_MEANINGS: dict[str, tuple[int, int]] = {"w": (0, 1), "s": (0, -1), "a": (1, -1), "d": (1, 1)}
DEFAULT_BIN_WIDTH = 0.1
_EXACT_TOL = 1e-6


def control_index(cfg: OutputConfig) -> int:
    """Position of the output's control in every control vector (-1 for keys, which drive both)."""
    return -1 if cfg.control == "both" else CONTROL_NAMES.index(cfg.control)


def class_centres(cfg: OutputConfig) -> np.ndarray:
    """Classification: `classes` values evenly spaced over the range, endpoints included.

    Including the endpoints lets the model say exactly "full throttle" or "full lock".
    """
    lo, hi = cfg.range
    if cfg.classes < 2:
        raise ConfigError(f"outputs.{cfg.name}.classes: need at least 2 classes, got {cfg.classes}")
    return np.linspace(lo, hi, cfg.classes, dtype=np.float64)


def nearest_index(centres: np.ndarray, value: float) -> int:
    """Index of the centre closest to `value` (ties go to the lower one)."""
    return int(np.argmin(np.abs(centres - value)))


def key_combinations(keys: Sequence[str]) -> list[tuple[str, ...]]:
    """Every combination of keys the encoding can produce (at most one key per control direction)."""
    for key in keys:
        if key not in KEY_MEANINGS:
            raise ConfigError(f"outputs: unknown key {key!r}; supported keys: {sorted(KEY_MEANINGS)}")
    per_control: list[list[tuple[str, ...]]] = []
    for ci in range(len(CONTROL_NAMES)):
        options: list[tuple[str, ...]] = [()]
        options += [(k,) for k in keys if KEY_MEANINGS[k][0] == ci]
        per_control.append(options)
    combos: list[tuple[str, ...]] = [()]
    for options in per_control:
        combos = [c + o for c in combos for o in options]
    return combos


def keys_pressed(keys: Sequence[str], values: Sequence[float] | np.ndarray, threshold: float) -> list[bool]:
    """Which keys a control vector presses: w = accel > thr, s = accel < -thr, a/d likewise."""
    out = []
    for key in keys:
        ci, sign = KEY_MEANINGS[key]
        out.append(bool(sign * float(values[ci]) > threshold))
    return out


class ValueBins:
    """Interval bins over a range, with exact-value bins at the endpoints and repeated edges."""

    def __init__(self, edges: Sequence[float], lo: float, hi: float) -> None:
        edges = sorted(float(e) for e in edges)
        exact = {e for e in edges if edges.count(e) > 1} | {lo, hi}
        self.points = sorted(set(edges) | {lo, hi})
        self.lo, self.hi = lo, hi
        self.labels: list[str] = []
        self._exact_bin: dict[float, int] = {}
        self._interval_bin: list[int] = []
        for i, p in enumerate(self.points):
            if p in exact:
                self._exact_bin[p] = len(self.labels)
                self.labels.append(f"={_fmt(p)}")
            if i + 1 < len(self.points):
                self._interval_bin.append(len(self.labels))
                left = "(" if p in exact else "["  # intervals are [a, b) less the exact points
                self.labels.append(f"{left}{_fmt(p)},{_fmt(self.points[i + 1])})")

    def index(self, value: float) -> int:
        v = min(max(float(value), self.lo), self.hi)
        for p, b in self._exact_bin.items():
            if abs(v - p) <= _EXACT_TOL:
                return b
        i = bisect.bisect_right(self.points, v) - 1
        return self._interval_bin[min(max(i, 0), len(self._interval_bin) - 1)]


def _fmt(x: float) -> str:
    return f"{x:g}"


def default_value_edges(lo: float, hi: float, width: float = DEFAULT_BIN_WIDTH) -> list[float]:
    """Edges `width` apart from lo to hi (the last interval absorbs a remainder)."""
    n = max(1, round((hi - lo) / width))
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


class Binning:
    """The balancing bins of one output: value -> bin, plus labels and edges for histograms."""

    def __init__(self, cfg: OutputConfig) -> None:
        self.name = cfg.name
        self.config = cfg
        self.kind = cfg.type
        self._ci = control_index(cfg)
        self._value_bins: ValueBins | None = None
        self._centres: np.ndarray | None = None
        if cfg.type == "keys":
            if cfg.bins:
                raise ConfigError(f"outputs.{cfg.name}.bins: a keys output bins by key combination; remove bins")
            self.combos = key_combinations(cfg.keys)
            self.labels = ["+".join(c) or "none" for c in self.combos]
            return
        if cfg.bins:
            self._value_bins = ValueBins(cfg.bins, *cfg.range)
        elif cfg.type == "regression":
            self._value_bins = ValueBins(default_value_edges(*cfg.range), *cfg.range)
        elif cfg.type == "classification":
            self._centres = class_centres(cfg)
        else:  # discrete_delta
            self._centres = np.asarray(sorted(cfg.deltas), dtype=np.float64)
            if len(self._centres) < 2:
                raise ConfigError(f"outputs.{cfg.name}.deltas: need at least 2 deltas")
        if self._value_bins is not None:
            self.labels = list(self._value_bins.labels)
        else:
            assert self._centres is not None
            self.labels = [_fmt(round(float(c), 6)) for c in self._centres]

    @property
    def num_bins(self) -> int:
        return len(self.labels)

    def balance_value(self, targets: Sequence[float] | np.ndarray, controls: Sequence[float] | np.ndarray) -> float:
        """The number this output balances on for one sample (see the module docstring)."""
        if self.kind == "keys":
            pressed = keys_pressed(self.config.keys, targets, self.config.key_threshold)
            combo = tuple(k for k, p in zip(self.config.keys, pressed, strict=True) if p)
            return float(self._combo_index(combo))
        if self.kind == "discrete_delta":
            return float(targets[self._ci]) - float(controls[self._ci])
        return float(targets[self._ci])

    def _combo_index(self, combo: tuple[str, ...]) -> int:
        # combos list controls in CONTROL_NAMES order; reorder the pressed keys to match
        ordered = tuple(sorted(combo, key=lambda k: (KEY_MEANINGS[k][0], self.config.keys.index(k))))
        return self.combos.index(ordered)

    def bin_index(self, value: float) -> int:
        """The bin of a balance value; values outside the range land in the outermost bin."""
        if self.kind == "keys":
            return min(max(int(round(value)), 0), self.num_bins - 1)
        if self._value_bins is not None:
            return self._value_bins.index(value)
        assert self._centres is not None
        return nearest_index(self._centres, value)

    def bin_of(self, targets: Sequence[float] | np.ndarray, controls: Sequence[float] | np.ndarray) -> int:
        return self.bin_index(self.balance_value(targets, controls))

    def bins_of(self, targets: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """The bin of every row of (rows, 2) targets and controls, as int64."""
        return np.fromiter((self.bin_of(t, c) for t, c in zip(targets, controls, strict=True)),
                           dtype=np.int64, count=len(targets))

    def bin_edges(self) -> list[float]:
        """Edges in balance-value space: interval points, or midpoints between class values
        (classes and deltas are nearest-value bins; the outer edges are half a step out)."""
        if self.kind == "keys":
            return [i - 0.5 for i in range(self.num_bins + 1)]
        if self._value_bins is not None:
            return list(self._value_bins.points)
        assert self._centres is not None
        c = [float(x) for x in self._centres]
        mids = [(a + b) / 2 for a, b in zip(c[:-1], c[1:], strict=True)]
        return [c[0] - (c[1] - c[0]) / 2, *mids, c[-1] + (c[-1] - c[-2]) / 2]


def build_binnings(outputs: Sequence[OutputConfig]) -> list[Binning]:
    """Bins of every output, for collectors that balance without importing torch."""
    return [Binning(cfg) for cfg in outputs]
