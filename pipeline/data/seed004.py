"""Import seed-004 ("GTA V LSTM") recordings into Charles' `ticks` format.

Seed 004 keeps one HDF5 file per recording session: `images` uint8 [n, H, W, 3] (RGB,
240x180 from 800x600) and `labels` [n, 7], one-hot over (w, a, s, d, wa, wd, nothing),
the keys read right after each frame was grabbed, at about 80 fps. Files whose path
contains "stuck" start with a padded wait (300 frames in the seed) that must never be a
training sample. `.npz` files with the same two arrays are read too (never with pickle):
the seed's oldest `.npy` lists of [image, label] pairs are pickled objects and refused.

The labels are kept one-hot (`labels` column + `label_classes`), the Dataset turns them
into control vectors; `controls` (in effect while a frame was shown) is the previous
frame's label. Speed and Purpose were not recorded: zeros, listed in `inputs_missing`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from pipeline.data.chunks import ChunkWriter, safe_name
from pipeline.errors import ConfigError, MissingExtraError, SampleError
from pipeline.train.augment import GTA5_MINIMAP_BOX
from pipeline.train.dataset import SEED004_CLASSES, classes_to_controls

log = structlog.get_logger(__name__)
SEED004_FPS = 80.0
SEED004_STUCK_PADDING = 300


@dataclass
class ImportSummary:
    files: int = 0
    frames: int = 0
    chunks: int = 0
    episodes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _read_h5(path: Path, chunk_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    try:
        import h5py
    except ImportError:
        raise MissingExtraError("h5py", "seed004") from None
    with h5py.File(path, "r") as f:
        if "images" not in f or "labels" not in f:
            raise SampleError(f"{path}: expected datasets 'images' and 'labels', found {sorted(f)}")
        images, labels = f["images"], f["labels"]
        for a in range(0, len(labels), chunk_rows):
            yield np.asarray(images[a:a + chunk_rows]), np.asarray(labels[a:a + chunk_rows])


def _read_npz(path: Path, chunk_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except ValueError as exc:
        raise SampleError(f"{path}: {exc} (pickled arrays are refused; convert them with a trusted script)") from None
    for a in range(0, len(labels), chunk_rows):
        yield images[a:a + chunk_rows], labels[a:a + chunk_rows]


def find_seed_files(src: Path) -> list[Path]:
    src = Path(src)
    if src.is_file():
        return [src]
    files = sorted(p for p in src.rglob("*") if p.suffix in (".h5", ".hdf5", ".npz"))
    if not files:
        raise SampleError(f"{src}: no .h5/.hdf5/.npz recordings found")
    return files


def parse_minimap_box(text: str | None) -> list[float]:
    """`--minimap-box x,y,w,h` as fractions of the frame; None or empty: GTA5's."""
    if not text:
        return list(GTA5_MINIMAP_BOX)
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise ConfigError(f"--minimap-box {text!r}: needs four numbers x,y,w,h (fractions of the frame)")
    return box


def import_seed004(src: Path, writer: ChunkWriter, fps: float = SEED004_FPS,
                   stuck_padding: int = SEED004_STUCK_PADDING, classes: Sequence[str] = SEED004_CLASSES,
                   bgr: bool = False, minimap_box: Sequence[float] | None = GTA5_MINIMAP_BOX,
                   chunk_rows: int = 1000) -> ImportSummary:
    """Convert every recording file under `src` into one episode of ticks chunks."""
    src = Path(src)
    summary = ImportSummary()
    for path in find_seed_files(src):
        rel = path.relative_to(src) if path != src else Path(path.name)
        episode = safe_name("seed004-" + "-".join(rel.with_suffix("").parts))
        padding = stuck_padding if "stuck" in str(rel).lower() else 0
        reader = _read_h5 if path.suffix in (".h5", ".hdf5") else _read_npz
        first_tick = 0
        previous = np.zeros(2, np.float32)
        for images, labels in reader(path, chunk_rows):
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise SampleError(f"{path}: images must be uint8 [n, H, W, 3], got {images.dtype} {list(images.shape)}")
            labels = (np.asarray(labels).reshape(len(labels), -1) > 0).astype(np.uint8)
            actions = classes_to_controls(labels, classes)
            controls = np.concatenate([previous[None], actions[:-1]]).astype(np.float32)
            previous = actions[-1]
            n = len(labels)
            frames = images[..., ::-1] if bgr else images
            meta = writer.write("ticks", episode, "ticks", {
                "frames": np.ascontiguousarray(frames),
                "speed": np.zeros(n, np.float32),
                "purpose": np.zeros((n, 2), np.float32),
                "controls": controls,
                "labels": labels,
                "game_time": (first_tick + np.arange(n)) / fps,
            }, {
                "fps": fps, "source": "seed004", "collector": str(rel), "environment": {},
                "first_tick": first_tick, "padding": padding, "label_classes": list(classes),
                "minimap_box": list(minimap_box) if minimap_box is not None else None,
                "frame_size": [int(images.shape[2]), int(images.shape[1])],
                "inputs_missing": ["speed", "purpose"],
            })
            first_tick += n
            summary.chunks += 1
            summary.frames += n
            log.debug("seed004_chunk", file=str(rel), rows=n, chunk=meta.file)
        summary.files += 1
        summary.episodes.append(episode)
        log.info("seed004_file_imported", file=str(rel), frames=first_tick, padding=padding, episode=episode)
    return summary
