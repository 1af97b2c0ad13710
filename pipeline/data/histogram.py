"""Histograms of what reached the buffers, per output bin: is the data really balanced?

Pure functions over targets/controls, so the same code serves Redis buffers
(`charles data histogram`), recorded directories and tests. Every sample carries every
output's targets, so a buffer gets a histogram for each output: its own (balanced by
construction) and the others (slightly unbalanced under v3, as in the reference).
Rendering: `render_png` (matplotlib, Agg) and `render_terminal` (rich).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.collect.bins import Binning
from pipeline.wire import codec
from pipeline.wire.rows import decode_row_header, row_head_size


@dataclass
class BinCounts:
    """Counts of one output's bins over a set of samples."""

    output: str
    labels: list[str]
    counts: np.ndarray
    mean: float
    std: float

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def filled(self) -> int:
        return int((self.counts > 0).sum())

    def imbalance(self) -> float:
        """Largest over smallest non-empty bin (1.0 = perfectly balanced; inf when empty)."""
        nz = self.counts[self.counts > 0]
        return float(nz.max() / nz.min()) if len(nz) else float("inf")


def bin_counts(targets: np.ndarray, controls: np.ndarray, binnings: Sequence[Binning]) -> dict[str, BinCounts]:
    """Per output, how many of these samples fall in each of its bins."""
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    controls = np.asarray(controls, dtype=np.float64).reshape(-1, 2)
    out = {}
    for b in binnings:
        values = np.array([b.balance_value(t, c) for t, c in zip(targets, controls, strict=True)])
        idx = np.array([b.bin_index(v) for v in values], dtype=np.int64)
        counts = np.bincount(idx, minlength=b.num_bins) if len(idx) else np.zeros(b.num_bins, np.int64)
        mean = float(values.mean()) if len(values) else float("nan")
        std = float(values.std()) if len(values) else float("nan")
        out[b.name] = BinCounts(b.name, list(b.labels), counts, mean, std)
    return out


def targets_from_rows(blobs: Iterable[bytes], limit: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode buffer rows, keeping only targets and controls; returns (targets, controls, skipped)."""
    targets, controls, skipped = [], [], 0
    for blob in blobs:
        if limit is not None and len(targets) >= limit:
            break
        try:
            row, _ = decode_row_header(blob[: row_head_size(blob)], len(blob))  # the frames are not needed
            t = np.asarray(row["targets"], dtype=np.float64).reshape(2)
            c = np.asarray(row["controls"], dtype=np.float64).reshape(2)
        except (codec.CodecError, KeyError, TypeError, ValueError):
            skipped += 1
            continue
        targets.append(t)
        controls.append(c)
    shape = (len(targets), 2)
    return (np.array(targets).reshape(shape), np.array(controls).reshape(shape), skipped)


def render_png(per_buffer: dict[str, dict[str, BinCounts]], path: str | Path) -> Path:
    """One bar chart per (buffer, output) in a grid: rows = buffers, columns = outputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffers = list(per_buffer)
    outputs = list(next(iter(per_buffer.values()))) if buffers else []
    fig, axes = plt.subplots(
        max(1, len(buffers)), max(1, len(outputs)), figsize=(5 * max(1, len(outputs)), 3 * max(1, len(buffers))),
        squeeze=False,
    )
    for r, buf in enumerate(buffers):
        for c, out in enumerate(outputs):
            ax = axes[r][c]
            h = per_buffer[buf][out]
            ax.bar(range(len(h.counts)), h.counts, color="tab:blue" if buf == out else "tab:gray")
            ax.set_xticks(range(len(h.labels)))
            ax.set_xticklabels(h.labels, rotation=90, fontsize=6)
            source = f"buffer {buf}" if buf in per_buffer[buf] else buf
            ax.set_title(f"{source}: {out} (n={h.total}, {h.filled}/{len(h.counts)} bins)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_terminal(per_buffer: dict[str, dict[str, BinCounts]], console: Any = None, width: int = 40) -> None:
    """Rich tables with bars: one per (buffer, output); the buffer's own output first."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for buf, hists in per_buffer.items():
        source = f"buffer {buf}" if buf in hists else buf  # a buffer is named after its output
        for out in sorted(hists, key=lambda o: o != buf):
            h = hists[out]
            own = " (own)" if out == buf else ""
            if h.total == 0:
                console.print(f"[bold]{source} - {out}{own}: empty, no samples", soft_wrap=True)
                continue
            title = (
                f"{source} - {out}{own}: n={h.total}, bins {h.filled}/{len(h.counts)}, "
                f"max/min {h.imbalance():.2f}, mean {h.mean:.3f} std {h.std:.3f}"
            )
            console.print(f"[bold]{title}", soft_wrap=True)
            table = Table("bin", "count", "", box=None)
            peak = max(1, int(h.counts.max()) if len(h.counts) else 1)
            for label, count in zip(h.labels, h.counts, strict=True):
                bar = "█" * int(round(width * int(count) / peak))
                table.add_row(label, str(int(count)), f"[{'cyan' if own else 'white'}]{bar}")
            console.print(table)
