"""Recordings on disk: chunk files with a JSON sidecar each, written durably, read without pickle.

Layout (see docs/datasets.md):

    DIR/<episode>/<stem>-000000.npz   the columns of one chunk (numpy .npy members in a zip)
    DIR/<episode>/<stem>-000000.json  its metadata; the sidecar is the commit point

Why `.npz` + JSON: numpy reads it with `allow_pickle=False` (object arrays are refused,
so a recording can never run code), any tool can open it, and members written
uncompressed (the default) are memory-mapped here, so a Dataset reads one frame of a
chunk without reading the whole chunk. The sidecar is plain JSON that `jq` can read.

A chunk is written to a temporary name, fsynced, renamed, then its sidecar likewise,
then the folder is fsynced: a chunk without a sidecar is an unfinished write (removed by
`remove_orphans`) and a sidecar always points at a complete chunk.

Two kinds of chunk:
    samples  rows of sample sets from the streams, columns = `schema.FIELDS`, context
             already built by the collector (its ContextSpec is in the sidecar); under a
             `frame_codec` other than raw (in the sidecar) `frames` is replaced by the rows'
             coded frames, `frames_blob` (uint8, all rows' bytes) and `frames_end` (int64,
             each row's end in it), decoded one sample at a time by `chunk_frames`
    ticks    one row per game tick of a continuous drive: frames [n,H,W,3], speed,
             purpose, controls (in effect while the frame was shown), actions (what the
             driver chose after seeing it: the label at shift 0), game_time; or `labels`
             (one-hot classes, `label_classes` in the sidecar) instead of actions
"""

from __future__ import annotations

import ast
import hashlib
import json
import mmap
import os
import re
import struct
import time
import zipfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from pipeline.errors import CodecError, SampleError
from pipeline.wire import codec
from pipeline.wire import frames as frames_mod
from pipeline.wire.schema import FIELDS

log = structlog.get_logger(__name__)

FORMAT = "charles-recording"
FORMAT_VERSION = 1
KINDS = ("samples", "ticks")
TICK_DTYPES: dict[str, Any] = {
    "frames": np.uint8,
    "speed": np.float32,
    "purpose": np.float32,
    "controls": np.float32,
    "actions": np.float32,
    "labels": np.uint8,
    "game_time": np.float64,
}
SAMPLE_DTYPES: dict[str, Any] = {
    "frames": np.uint8, "speed": np.float32, "purpose": np.float32, "controls": np.float32,
    "targets": np.float32, "history": np.float32, "game_time": np.float64,
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(text: str) -> str:
    """A file-name-safe version of an episode id or output name (ids come from the network)."""
    cleaned = _SAFE_NAME.sub("_", text)[:100].lstrip(".")
    return cleaned or "_"


@dataclass
class ChunkMeta:
    """One chunk's sidecar, plus where it lies; `extra` keeps fields this version does not know."""

    path: Path  # the .json sidecar
    kind: str
    episode: str
    rows: int
    file: str
    bytes: int
    created: float
    fps: float
    output: str | None = None
    collector: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    chunk: int = 0
    first_tick: int = 0
    padding: int = 0
    entries: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return self.path.with_name(self.file)

    def get(self, key: str, default: Any = None) -> Any:
        return self.extra.get(key, default)

    @classmethod
    def from_json(cls, path: Path) -> ChunkMeta:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise SampleError(f"{path}: not a {FORMAT} sidecar")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise SampleError(f"{path}: format version {data['format_version']} is newer than {FORMAT_VERSION}")
        if data.get("kind") not in KINDS:
            raise SampleError(f"{path}: kind {data.get('kind')!r} is not one of {KINDS}")
        known = {f for f in cls.__dataclass_fields__ if f not in ("path", "extra")}
        return cls(path=path, **{k: data[k] for k in known if k in data},
                   extra={k: v for k, v in data.items() if k not in known})


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, write: Any) -> None:
    """Write to a temporary name, fsync, rename over `path` (the caller fsyncs the folder)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ChunkWriter:
    """Writes chunks under one root; numbering continues from what is already on disk."""

    def __init__(self, root: Path, compress: bool = False) -> None:
        self.root = Path(root)
        self.compress = compress
        self.root.mkdir(parents=True, exist_ok=True)
        self._next: dict[tuple[str, str], int] = {}

    def _number(self, folder: Path, stem: str) -> int:
        key = (str(folder), stem)
        if key not in self._next:
            used = [int(p.stem.rsplit("-", 1)[1]) for p in folder.glob(f"{stem}-*.json")
                    if p.stem.rsplit("-", 1)[1].isdigit()]
            self._next[key] = max(used, default=-1) + 1
        n = self._next[key]
        self._next[key] = n + 1
        return n

    def write(self, kind: str, episode: str, stem: str, columns: dict[str, np.ndarray],
              meta: dict[str, Any]) -> ChunkMeta:
        """Write one chunk and its sidecar durably; returns the sidecar as read back."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        folder = self.root / safe_name(episode)
        folder.mkdir(parents=True, exist_ok=True)
        number = self._number(folder, safe_name(stem))
        base = f"{safe_name(stem)}-{number:06d}"
        data_path = folder / f"{base}.npz"
        arrays = {k: np.ascontiguousarray(v) for k, v in columns.items()}
        rows = {len(v) for k, v in arrays.items() if k != "frames_blob"}  # the blob: bytes, not rows
        if len(rows) != 1:
            raise SampleError(f"chunk columns differ in length: { {k: len(v) for k, v in arrays.items()} }")
        saver = np.savez_compressed if self.compress else np.savez
        _write_durably(data_path, lambda f: saver(f, **arrays))
        digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
        sidecar = {
            **meta,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "episode": episode,
            "chunk": number,
            "rows": rows.pop(),
            "file": data_path.name,
            "bytes": data_path.stat().st_size,
            "sha256": digest,
            "created": time.time(),
            "columns": {k: [str(v.dtype), list(v.shape)] for k, v in arrays.items()},
        }
        json_path = folder / f"{base}.json"
        _write_durably(json_path, lambda f: f.write(json.dumps(sidecar, indent=1).encode()))
        _fsync_dir(folder)
        _fsync_dir(self.root)
        return ChunkMeta.from_json(json_path)


def scan(root: Path) -> list[ChunkMeta]:
    """Every committed chunk under `root` (one level of episode folders), oldest first."""
    metas = []
    for path in sorted(Path(root).glob("*/*.json")):
        if path.name.startswith("."):
            continue
        try:
            meta = ChunkMeta.from_json(path)
        except (OSError, ValueError, TypeError, SampleError) as exc:
            log.warning("recording_sidecar_skipped", path=str(path), error=str(exc))
            continue
        if meta.data_path.is_file():
            metas.append(meta)
    metas.sort(key=lambda m: (m.created, str(m.path)))
    return metas


def describe(roots: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Per data directory its chunks, episodes, rows, size (MB) and kinds: `charles record info`."""
    out = {}
    for root in roots:
        metas = scan(root)
        out[str(root)] = {
            "chunks": len(metas),
            "episodes": len({m.episode for m in metas}),
            "rows": sum(m.rows for m in metas),
            "mb": round(sum(m.bytes for m in metas) / 2**20, 2),
            "kinds": sorted({m.kind for m in metas}),
        }
    return out


def remove_orphans(root: Path) -> int:
    """Delete unfinished writes: temporary files and chunks without a sidecar."""
    removed = 0
    for path in Path(root).glob("*/.*.tmp"):
        path.unlink(missing_ok=True)
        removed += 1
    for path in Path(root).glob("*/*.npz"):
        if not path.with_suffix(".json").exists():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def delete_chunk(meta: ChunkMeta) -> int:
    """Remove a chunk (sidecar first, so a crash leaves an orphan, never a dangling sidecar)."""
    meta.path.unlink(missing_ok=True)
    meta.data_path.unlink(missing_ok=True)
    folder = meta.path.parent
    try:
        folder.rmdir()  # only when the episode has no chunk left
    except OSError:
        pass
    return meta.bytes


class DiskBudget:
    """Keeps the chunks under a root below `max_bytes` by deleting the oldest first."""

    def __init__(self, root: Path, max_bytes: int | None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.chunks: list[ChunkMeta] = scan(self.root)
        self.total = sum(m.bytes for m in self.chunks)
        self.deleted_chunks = 0

    def add(self, meta: ChunkMeta) -> list[ChunkMeta]:
        """Account for a new chunk and rotate; returns the chunks deleted."""
        self.chunks.append(meta)
        self.total += meta.bytes
        deleted = []
        while self.max_bytes is not None and self.total > self.max_bytes and len(self.chunks) > 1:
            old = self.chunks.pop(0)
            self.total -= delete_chunk(old)
            deleted.append(old)
        if deleted:
            self.deleted_chunks += len(deleted)
            log.info("recording_rotated", deleted=len(deleted), total_mb=round(self.total / 2**20, 2))
        return deleted


# -- reading -------------------------------------------------------------------------------

def _npy_at(buf: mmap.mmap, offset: int, name: str, path: Path) -> np.ndarray:
    """An array view of one stored .npy member starting at `offset` of the mapped zip file."""
    magic = bytes(buf[offset:offset + 8])
    if magic[:6] != b"\x93NUMPY":
        raise SampleError(f"{path}: member {name} is not a .npy array")
    major = magic[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", buf[offset + 8:offset + 10]), offset + 10
    else:
        (hlen,), start = struct.unpack("<I", buf[offset + 8:offset + 12]), offset + 12
    header = bytes(buf[start:start + hlen]).decode("latin1")
    info = ast.literal_eval(header)  # a dict literal of str/bool/tuple: no code runs
    dtype = np.dtype(info["descr"])
    if dtype.hasobject:
        raise SampleError(f"{path}: member {name} holds Python objects; refused")
    shape = tuple(int(s) for s in info["shape"])
    count = int(np.prod(shape)) if shape else 1
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=start + hlen)
    return arr.reshape(shape, order="F" if info["fortran_order"] else "C")


def load_chunk(path: Path, use_mmap: bool = True, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The columns of one chunk: memory-mapped when stored uncompressed, else read (no pickle).

    `names` limits what a compressed chunk decompresses (mapped columns cost nothing).
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    if use_mmap and infos and all(i.compress_type == zipfile.ZIP_STORED for i in infos):
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        out = {}
        for info in infos:
            local = buf[info.header_offset:info.header_offset + 30]
            if local[:4] != b"PK\x03\x04":
                raise SampleError(f"{path}: broken zip entry {info.filename}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            name = info.filename.removesuffix(".npy")
            out[name] = _npy_at(buf, info.header_offset + 30 + name_len + extra_len, name, path)
        return out
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files if names is None or name in names}


def check_columns(meta: ChunkMeta, columns: dict[str, np.ndarray], need: Collection[str] | None = None) -> None:
    """Refuse a chunk whose columns have unexpected dtypes or lengths (files are untrusted)."""
    dtypes = SAMPLE_DTYPES if meta.kind == "samples" else TICK_DTYPES
    if need is None:
        need = set(FIELDS) if meta.kind == "samples" else {"frames", "speed", "purpose", "controls", "game_time"}
    coded = frame_codec(meta) != frames_mod.RAW
    if coded and "frames" in need:
        need = (set(need) - {"frames"}) | {"frames_blob", "frames_end"}
    missing = set(need) - set(columns)
    if missing:
        raise SampleError(f"{meta.data_path}: missing columns {sorted(missing)}")
    if meta.kind == "ticks" and "actions" not in columns and "labels" not in columns:
        raise SampleError(f"{meta.data_path}: a ticks chunk needs 'actions' or 'labels'")
    if coded and "frames_blob" in columns:
        blob, end = columns["frames_blob"], columns.get("frames_end")
        if (blob.dtype != np.uint8 or blob.ndim != 1 or end is None or end.dtype != np.int64 or end.ndim != 1
                or len(end) and (end[0] <= 0 or end[-1] != len(blob) or (np.diff(end) <= 0).any())):
            raise SampleError(f"{meta.data_path}: frames_blob/frames_end are not uint8 bytes and each row's "
                              "increasing end in them")
    for name, arr in columns.items():
        if name == "frames_blob":
            continue
        if name in dtypes and arr.dtype != np.dtype(dtypes[name]):
            raise SampleError(f"{meta.data_path}: {name} has dtype {arr.dtype}, expected {np.dtype(dtypes[name])}")
        if len(arr) != meta.rows:
            raise SampleError(f"{meta.data_path}: {name} has {len(arr)} rows, the sidecar says {meta.rows}")


def frame_codec(meta: ChunkMeta) -> str:
    """The codec of a chunk's frames (`raw` for ticks and for chunks written before codecs)."""
    name = meta.get("frame_codec", frames_mod.RAW) if meta.kind == "samples" else frames_mod.RAW
    if name not in frames_mod.CODECS:
        raise SampleError(f"{meta.path}: frame_codec {name!r} is unknown; this version knows {list(frames_mod.CODECS)}")
    return str(name)


def coded_frames_shape(meta: ChunkMeta) -> tuple[int, int, int, int]:
    """One coded row's frames [F, H, W, 3], from the sidecar's context and frame size."""
    try:
        width, height = (int(v) for v in meta.get("frame_size"))
        shape = (int((meta.get("context") or {}).get("frames", 1)), height, width, 3)
    except (TypeError, ValueError):
        raise SampleError(f"{meta.path}: coded frames need the sidecar's frame_size [w, h]") from None
    if min(shape) <= 0 or frames_mod.raw_bytes(shape) > codec.DEFAULT_MAX_BYTES:
        raise SampleError(f"{meta.path}: frames of shape {list(shape)} are empty or beyond "
                          f"{codec.DEFAULT_MAX_BYTES} bytes")
    return shape


def chunk_frames(meta: ChunkMeta, columns: dict[str, np.ndarray], row: int) -> np.ndarray:
    """Row `row`'s frames [F, H, W, 3] of a loaded chunk: a view when raw, decoded (sizes
    checked first) when coded."""
    if "frames_blob" not in columns:
        return columns["frames"][row]
    end = columns["frames_end"]
    start = int(end[row - 1]) if row else 0
    try:
        return frames_mod.decode(columns["frames_blob"][start : int(end[row])], frame_codec(meta),
                                 coded_frames_shape(meta))
    except CodecError as exc:
        raise SampleError(f"{meta.data_path}: row {row}: {exc}") from None
