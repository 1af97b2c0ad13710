"""Training from recordings: a PyTorch Dataset whose batches are the live trainer's columns.

Several data directories; two kinds of recording (see `pipeline.data.chunks`):
- ticks (continuous drives, seed-004 imports): samples are cut here, exactly as the
  collector's `ContextBuilder` builds them live: frames at `frame_stride` ticks (stacked
  frames or a sequence), history rows at `history_stride`, and the label of the tick
  `label_shift` (Δ) after "now" (`actions[t + Δ]`, the driver's choice after seeing frame
  t + Δ). A recording's padded start (`padding`, seed 004's "stuck" files) is never
  "now": the first sample is the first tick after it; the padding may only be context.
  One-hot class labels (w, a, s, d, wa, wd, none) become control vectors here, so the
  keys output sees independent keys.
- samples (the streams' balanced sets): used as they are, context taken down to what the
  config asks for when the recorded one is a multiple of it.
Strides are given in seconds (converted at each recording's own fps, as the seed matches
stride in time) or in frames. The split is by episode: no episode is in both splits.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from pipeline.data.chunks import ChunkMeta, check_columns, chunk_frames, load_chunk, scan
from pipeline.errors import SampleError
from pipeline.train.augment import Augmenter
from pipeline.wire.schema import HISTORY_FEATURES, ContextSpec
from pipeline.wire.stacking import rows_to_columns

log = structlog.get_logger(__name__)

#: Seed 004's one-hot classes, in its order; `none` = no key pressed.
SEED004_CLASSES: tuple[str, ...] = ("w", "a", "s", "d", "wa", "wd", "none")
_KEY_VECTORS = {"w": (1.0, 0.0), "s": (-1.0, 0.0), "a": (0.0, -1.0), "d": (0.0, 1.0)}
_SMALL_TICK_FIELDS = ("speed", "purpose", "controls", "game_time")
_SMALL_SAMPLE_FIELDS = ("speed", "purpose", "controls", "targets", "history", "game_time")


def class_controls(classes: Sequence[str]) -> np.ndarray:
    """[C, 2] control vector of each class name: 'wa' = forward + left, 'none' = nothing."""
    out = np.zeros((len(classes), 2), dtype=np.float32)
    for i, name in enumerate(classes):
        keys = "" if name in ("none", "nothing", "") else name
        for key in keys:
            if key not in _KEY_VECTORS:
                raise SampleError(f"label class {name!r}: unknown key {key!r} (known: w a s d)")
            out[i] += _KEY_VECTORS[key]
    return np.clip(out, -1.0, 1.0)


def classes_to_controls(onehot: np.ndarray, classes: Sequence[str] = SEED004_CLASSES) -> np.ndarray:
    """One-hot (or multi-hot) class labels [n, C] -> control vectors [n, 2] in [-1, 1]."""
    onehot = np.asarray(onehot)
    if onehot.shape[-1] != len(classes):
        raise SampleError(f"labels have {onehot.shape[-1]} classes, expected {len(classes)}: {list(classes)}")
    return np.clip(onehot.astype(np.float32) @ class_controls(classes), -1.0, 1.0)


def classes_to_keys(onehot: np.ndarray, classes: Sequence[str] = SEED004_CLASSES,
                    keys: Sequence[str] = ("w", "a", "s", "d")) -> np.ndarray:
    """One-hot classes [n, C] -> independent keys [n, K] (bool): 'wa' presses w and a."""
    onehot = np.asarray(onehot).astype(bool)
    member = np.array([[k in ("" if c in ("none", "nothing") else c) for k in keys] for c in classes])
    return (onehot[..., :, None] & member).any(axis=-2)


@dataclass(frozen=True)
class Windows:
    """How samples are cut from a ticks recording, in that recording's ticks."""

    frames: int
    frame_stride: int
    history: int
    history_stride: int
    label_shift: int

    @property
    def lookback(self) -> int:
        return max((self.frames - 1) * self.frame_stride, self.history * self.history_stride)


@dataclass(frozen=True)
class DataSpec:
    """What the training config asks of every sample; `*_frames` override the seconds."""

    context: ContextSpec
    width: int
    height: int
    frame_stride_frames: int | None = None
    label_shift_frames: int | None = None
    history_stride_frames: int | None = None
    sample_every: int = 1

    def windows(self, fps: float) -> Windows:
        c = ContextSpec(fps, self.context.frames, self.context.frame_stride_s, self.context.history,
                        self.context.history_stride_s, self.context.label_shift_s)
        return Windows(
            frames=c.frames,
            frame_stride=self.frame_stride_frames if self.frame_stride_frames is not None else c.frame_stride,
            history=c.history,
            history_stride=self.history_stride_frames if self.history_stride_frames is not None else c.history_stride,
            label_shift=self.label_shift_frames if self.label_shift_frames is not None else c.label_shift,
        )


@dataclass
class Episode:
    """A contiguous run of one episode's chunks in one directory (a split never cuts it)."""

    episode: str
    root: Path
    kind: str
    metas: list[ChunkMeta]
    fps: float
    first_tick: int = 0
    padding: int = 0
    box: list[float] | None = None
    frame_size: tuple[int, int] | None = None
    small: dict[str, np.ndarray] = field(default_factory=dict)
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def name(self) -> str:
        return f"{self.root.name}/{self.episode}"


def _episode_from(metas: list[ChunkMeta], root: Path) -> Episode:
    first = metas[0]
    small_names = _SMALL_SAMPLE_FIELDS if first.kind == "samples" else _SMALL_TICK_FIELDS
    parts: dict[str, list[np.ndarray]] = {n: [] for n in (*small_names, "actions")}
    for meta in metas:
        cols = load_chunk(meta.data_path, names=(*small_names, "actions", "labels"))
        check_columns(meta, cols, need=small_names)
        for name in small_names:
            parts[name].append(np.array(cols[name]))
        if first.kind == "ticks":
            if "actions" in cols:
                parts["actions"].append(np.array(cols["actions"], dtype=np.float32))
            else:
                classes = meta.get("label_classes") or SEED004_CLASSES
                parts["actions"].append(classes_to_controls(cols["labels"], classes))
    small = {n: np.concatenate(v) for n, v in parts.items() if v}
    size = first.get("frame_size")
    return Episode(
        episode=first.episode, root=root, kind=first.kind, metas=metas, fps=float(first.fps),
        first_tick=int(first.first_tick), padding=int(first.padding),
        box=first.get("minimap_box"), frame_size=tuple(size) if size else None,  # type: ignore[arg-type]
        small=small, offsets=np.concatenate([[0], np.cumsum([m.rows for m in metas])]).astype(np.int64),
    )


def find_episodes(dirs: Sequence[Path | str]) -> list[Episode]:
    """Every episode in these data directories; a ticks episode with a gap becomes two runs."""
    episodes: list[Episode] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise SampleError(f"{root}: data directory not found")
        groups: dict[tuple[str, str, str | None], list[ChunkMeta]] = {}
        for meta in scan(root):
            groups.setdefault((meta.path.parent.name, meta.kind, meta.output), []).append(meta)
        for (_, kind, _), metas in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
            if kind == "samples":
                episodes.append(_episode_from(sorted(metas, key=lambda m: m.chunk), root))
                continue
            metas.sort(key=lambda m: m.first_tick)
            run = [metas[0]]
            for meta in metas[1:]:
                if meta.first_tick != run[-1].first_tick + run[-1].rows:
                    episodes.append(_episode_from(run, root))
                    run = []
                run.append(meta)
            episodes.append(_episode_from(run, root))
    if not episodes:
        raise SampleError(f"no recordings found in {[str(d) for d in dirs]}")
    return episodes


def split_episodes(episodes: Sequence[Episode], val_fraction: float, seed: int = 0) -> tuple[list[Episode], list[Episode]]:
    """Train/validation by episode id (a stable hash), so no episode is in both splits."""
    def score(episode: str) -> float:
        digest = hashlib.sha256(f"{seed}:{episode}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ids = sorted({ep.episode for ep in episodes}, key=score)
    val_ids = {e for e in ids if score(e) < val_fraction}
    if val_fraction > 0 and not val_ids and len(ids) > 1:
        val_ids = {ids[0]}
    if ids and len(val_ids) == len(ids):  # one recording (or a large fraction): training keeps one
        val_ids.discard(ids[-1])
    train = [ep for ep in episodes if ep.episode not in val_ids]
    val = [ep for ep in episodes if ep.episode in val_ids]
    return train, val


class ChunkCache:
    """Loaded chunks per process (LRU); memory-mapped chunks cost address space, not RAM."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[Path, dict[str, np.ndarray]] = OrderedDict()

    def get(self, meta: ChunkMeta) -> dict[str, np.ndarray]:
        key = meta.data_path
        cols = self._items.get(key)
        if cols is None:
            cols = load_chunk(key)
            check_columns(meta, cols)
            self._items[key] = cols
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return cols


class RecordedDataset:
    """Map-style dataset of sample rows (dicts of `schema.FIELDS`), Learner-ready when stacked."""

    def __init__(self, episodes: Sequence[Episode], spec: DataSpec, augment: Augmenter | None = None,
                 seed: int = 0, cache_chunks: int = 64) -> None:
        self.episodes = list(episodes)
        self.spec = spec
        self.augment = augment
        self.seed = seed
        self.cache_chunks = cache_chunks
        self._pid = -1
        self._cache = ChunkCache(cache_chunks)
        self._rng: np.random.Generator | None = None
        self.windows = [spec.windows(ep.fps) for ep in self.episodes]
        self._selection = [self._check_samples_context(i, ep) if ep.kind == "samples" else None
                           for i, ep in enumerate(self.episodes)]
        index = [self._valid_rows(i, ep) for i, ep in enumerate(self.episodes)]
        self.index = np.concatenate([np.stack([np.full(len(v), i), v], axis=1) for i, v in enumerate(index)]
                                    ).astype(np.int64) if index else np.zeros((0, 2), np.int64)
        if augment is not None and any(ep.box is None for ep in self.episodes):
            log.warning("augment_without_minimap_box", episodes=sum(ep.box is None for ep in self.episodes),
                        hint="no minimap_box in the recording: flips mirror the minimap too")

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        """For DataLoader workers: no mapped chunks or random state travel (each builds its own)."""
        state = self.__dict__.copy()
        state.update(_cache=ChunkCache(self.cache_chunks), _pid=-1, _rng=None)
        return state

    def _valid_rows(self, i: int, ep: Episode) -> np.ndarray:
        """The rows that may be "now": ticks with their lookback and label, after the padding."""
        if ep.kind == "samples":
            return np.arange(0, ep.rows, self.spec.sample_every, dtype=np.int64)
        w = self.windows[i]
        start = max(w.lookback, ep.padding - ep.first_tick, 0)
        stop = ep.rows - w.label_shift  # exclusive: actions[t + shift] must exist
        return np.arange(start, max(start, stop), self.spec.sample_every, dtype=np.int64)

    def _check_samples_context(self, i: int, ep: Episode) -> tuple[list[int], list[int]]:
        """Which recorded frames/history rows make the wanted context, or a clear error."""
        rec = ep.metas[0].get("context") or {}
        want = self.windows[i]
        rec_spec = ContextSpec(ep.fps, int(rec.get("frames", 1)), float(rec.get("frame_stride_s", 0.1)),
                               int(rec.get("history", 0)), float(rec.get("history_stride_s", 0.1)),
                               float(rec.get("label_shift_s", 0.0)))
        if rec_spec.label_shift != want.label_shift:
            log.warning("label_shift_differs", episode=ep.name, recorded=rec_spec.label_shift,
                        wanted=want.label_shift, hint="stream samples keep the collector's shift")
        frames = _select(rec_spec.frames, rec_spec.frame_stride, want.frames, want.frame_stride, ep, "frames")
        history = _select(rec_spec.history, rec_spec.history_stride, want.history, want.history_stride, ep,
                          "history", offset=1)
        return frames, history

    # -- rows -----------------------------------------------------------------------------------
    def _process_state(self) -> None:
        if self._pid != os.getpid():  # a DataLoader worker: its own cache and random stream
            import torch

            self._pid = os.getpid()
            self._cache = ChunkCache(self.cache_chunks)
            self._rng = np.random.default_rng([self.seed, self._pid, torch.initial_seed() % 2**32])

    def _frame(self, ep: Episode, t: int) -> np.ndarray:
        c = int(np.searchsorted(ep.offsets, t, side="right")) - 1
        return self._cache.get(ep.metas[c])["frames"][t - int(ep.offsets[c])]

    def row(self, i: int, augment: bool = True) -> dict[str, np.ndarray]:
        self._process_state()
        e, t = (int(v) for v in self.index[i])
        ep = self.episodes[e]
        row = self._sample_row(e, ep, t) if ep.kind == "samples" else self._tick_row(e, ep, t)
        row["frames"] = self._resize(row["frames"])
        if augment and self.augment is not None:
            assert self._rng is not None
            row = self.augment(row, ep.box, self._rng)
        return row

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.row(i)

    def _tick_row(self, e: int, ep: Episode, t: int) -> dict[str, np.ndarray]:
        w, s = self.windows[e], ep.small
        frames = np.stack([self._frame(ep, max(0, t - k * w.frame_stride)) for k in range(w.frames - 1, -1, -1)])
        history = np.zeros((w.history, len(HISTORY_FEATURES)), dtype=np.float32)
        for r, k in enumerate(range(w.history, 0, -1)):
            p = max(0, t - k * w.history_stride)
            history[r] = (*s["controls"][p], s["speed"][p], *s["purpose"][p])
        return {
            "frames": frames,
            "speed": np.float32(s["speed"][t]),
            "purpose": s["purpose"][t].astype(np.float32),
            "controls": s["controls"][t].astype(np.float32),
            "targets": s["actions"][t + w.label_shift].astype(np.float32),
            "history": history,
            "game_time": np.float64(s["game_time"][t]),
        }

    def _sample_row(self, e: int, ep: Episode, t: int) -> dict[str, np.ndarray]:
        sel = self._selection[e]
        assert sel is not None
        frame_idx, history_idx = sel
        c = int(np.searchsorted(ep.offsets, t, side="right")) - 1
        meta = ep.metas[c]
        frames = chunk_frames(meta, self._cache.get(meta), t - int(ep.offsets[c]))  # decoded here when coded
        s = ep.small
        return {
            "frames": np.ascontiguousarray(frames[frame_idx]),
            "speed": np.float32(s["speed"][t]),
            "purpose": s["purpose"][t].astype(np.float32),
            "controls": s["controls"][t].astype(np.float32),
            "targets": s["targets"][t].astype(np.float32),
            "history": s["history"][t][history_idx].astype(np.float32),
            "game_time": np.float64(s["game_time"][t]),
        }

    def _resize(self, frames: np.ndarray) -> np.ndarray:
        h, w = frames.shape[1:3]
        if (w, h) == (self.spec.width, self.spec.height):
            return np.ascontiguousarray(frames)
        import cv2

        return np.stack([cv2.resize(np.ascontiguousarray(f), (self.spec.width, self.spec.height),
                                    interpolation=cv2.INTER_AREA) for f in frames])

    # -- labels without frames (balancing, statistics) ---------------------------------------------
    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(targets [N, 2], controls [N, 2]) of every sample, read without touching frames."""
        targets = np.zeros((len(self), 2), np.float32)
        controls = np.zeros((len(self), 2), np.float32)
        for e, ep in enumerate(self.episodes):
            mask = self.index[:, 0] == e
            t = self.index[mask, 1]
            if ep.kind == "samples":
                targets[mask] = ep.small["targets"][t]
            else:
                targets[mask] = ep.small["actions"][t + self.windows[e].label_shift]
            controls[mask] = ep.small["controls"][t]
        return targets, controls


def _select(have: int, have_stride: int, want: int, want_stride: int, ep: Episode, what: str,
            offset: int = 0) -> list[int]:
    """Indices of the recorded rows that make the wanted context (stride a multiple of the recorded)."""
    if want == 0:
        return []
    if offset == 0 and want == 1:
        return [have - 1]
    if want == have and (want_stride == have_stride or want <= 1 - offset):
        return list(range(have))
    if want_stride % max(have_stride, 1) or want_stride * (want - 1 + offset) > have_stride * (have - 1 + offset):
        raise SampleError(
            f"{ep.name}: recorded {what} are {have} at a stride of {have_stride} ticks; the config wants "
            f"{want} at {want_stride} ticks (needs fewer or equal, at a multiple of the recorded stride)")
    step = want_stride // max(have_stride, 1)
    if offset == 0:  # frames: oldest first, the last one is "now"
        return [have - 1 - k * step for k in range(want - 1, -1, -1)]
    return [have - k * step for k in range(want, 0, -1)]  # history: row r is `have - r` strides ago


def collate(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack rows into the live trainer's columns (numpy, `schema.FIELDS`)."""
    return rows_to_columns(rows)


def balanced_weights(dataset: RecordedDataset, binnings: Sequence[Any]) -> np.ndarray:
    """Per-sample weights that give every non-empty bin of every output the same share."""
    targets, controls = dataset.labels()
    weights = np.zeros(len(dataset), dtype=np.float64)
    for b in binnings:
        bins = b.bins_of(targets, controls)
        counts = np.bincount(bins, minlength=b.num_bins).astype(np.float64)
        nonempty = max(1, int((counts > 0).sum()))
        weights += 1.0 / (counts[bins] * nonempty)
    return weights / max(len(binnings), 1)

