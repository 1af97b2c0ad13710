"""The one format of a sample on the wire, in the buffers and in a draw: a buffer row.

A row is built on `codec.py` (its header is msgpack) with the frames after it, raw or
coded (`frames.py`); a collector finishes rows, the server checks their heads, Redis
moves them into a buffer, and the trainer decodes them (`stacking.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import CodecError, SampleError
from pipeline.wire import codec
from pipeline.wire import frames as frames_mod
from pipeline.wire.frames import RAW_CODEC, FrameCodec

#: the version of the row format and of a set's meta (`manifest.py`)
FORMAT_VERSION = 3
#: the most of a row's head (or a meta) anyone reads when checking a set
MAX_HEAD_BYTES = 65536

#: Buffer rows: magic, header length (uint32 LE), msgpack header (every field but the
#: frames as plain numbers and lists, plus the frames' shape and, unless raw, their
#: `frames_codec`), then the frames: raw uint8, or coded (`pipeline.wire.frames`).
#: The trainer maps raw frames straight out of the bytes Redis returned (no msgpack copy
#: of 57 KB per sample); plain numbers decode in msgpack's C code, where numpy arrays in
#: msgpack would each need a Python hook (the server and trainer read every header).
#: A raw row (`CR1`) is byte for byte what it was before codecs existed; a coded row is
#: `CR2`, and its head reaches `frames.FRAMES_PEEK` bytes into the frames, so the server
#: checks the size the image declares (and Redis that it is what the trainer will decode).
ROW_MAGIC = b"CR1"
CODED_ROW_MAGIC = b"CR2"
_ROW_PREFIX = len(ROW_MAGIC) + 4


def encode_row(row: dict[str, np.ndarray], episode: str, captured_at: float, policy_version: int,
               frame_codec: FrameCodec = RAW_CODEC) -> bytes:
    frames = np.ascontiguousarray(row["frames"], dtype=np.uint8)
    coded = {} if frame_codec.name == frames_mod.RAW else {"frames_codec": frame_codec.name}
    header = codec.encode(
        {"v": FORMAT_VERSION, "episode": episode, "frames_shape": list(frames.shape), **coded,
         "captured_at": float(captured_at), "policy_version": int(policy_version),
         **{k: np.asarray(v).tolist() for k, v in row.items() if k != "frames"}}
    )
    magic = ROW_MAGIC if frame_codec.name == frames_mod.RAW else CODED_ROW_MAGIC
    return b"".join((magic, len(header).to_bytes(4, "little"), header, frame_codec.encode(frames)))


def row_head_size(blob: bytes) -> int:
    """Bytes of a row the server needs to read: its prefix and header, and of coded frames
    their first `frames.FRAMES_PEEK` bytes."""
    magic = blob[: len(ROW_MAGIC)]
    if len(blob) < _ROW_PREFIX or magic not in (ROW_MAGIC, CODED_ROW_MAGIC):
        return min(len(blob), MAX_HEAD_BYTES)
    peek = frames_mod.FRAMES_PEEK if magic == CODED_ROW_MAGIC else 0
    return min(len(blob), _ROW_PREFIX + int.from_bytes(blob[len(ROW_MAGIC) : _ROW_PREFIX], "little") + peek,
               MAX_HEAD_BYTES)


@dataclass(frozen=True)
class RowHead:
    """A row as its head describes it: its fields but the frames, the frames' shape and
    codec, where the frames start, and their length."""

    fields: dict[str, Any]
    shape: list[int]
    codec: str
    offset: int
    frames_bytes: int


def read_row_head(head: bytes, length: int) -> RowHead:
    """A row's head from its first bytes and full length; the frames' byte count must be
    the shape's (raw) or within the codec's bound for it (coded)."""
    magic = head[: len(ROW_MAGIC)]
    if len(head) < _ROW_PREFIX or magic not in (ROW_MAGIC, CODED_ROW_MAGIC):
        raise CodecError("buffer row of an unknown format")
    size = int.from_bytes(head[len(ROW_MAGIC) : _ROW_PREFIX], "little")
    if len(head) < _ROW_PREFIX + size:
        raise CodecError(f"buffer row header of {size} bytes is cut short or beyond {MAX_HEAD_BYTES}")
    header = codec.decode(head[_ROW_PREFIX : _ROW_PREFIX + size])
    if not isinstance(header, dict) or header.get("v") != FORMAT_VERSION:
        raise CodecError("buffer row of an unknown format version")
    shape = header.pop("frames_shape", None)
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CodecError("buffer row without a valid frames shape")
    name = header.pop("frames_codec", frames_mod.RAW)
    if not isinstance(name, str) or name not in frames_mod.CODECS:
        raise CodecError(f"buffer row frames coded as {name!r}; this version knows {list(frames_mod.CODECS)}")
    if (name == frames_mod.RAW) != (magic == ROW_MAGIC):
        raise CodecError(f"buffer row {magic!r} with frames coded as {name!r}: raw rows are CR1, coded ones CR2")
    frames_bytes = length - _ROW_PREFIX - size
    if name == frames_mod.RAW:
        if frames_bytes != math.prod(shape):  # math.prod: np.prod costs 8 us a row, on every hot path
            raise CodecError(f"buffer row frames hold {frames_bytes} bytes, shape {shape} needs {math.prod(shape)}")
    elif not 0 < frames_bytes <= frames_mod.max_encoded_bytes(name, shape):
        raise CodecError(f"buffer row {name} frames hold {frames_bytes} bytes, shape {shape} allows "
                         f"1..{frames_mod.max_encoded_bytes(name, shape)}")
    return RowHead(header, shape, name, _ROW_PREFIX + size, frames_bytes)


def decode_row_header(head: bytes, length: int) -> tuple[dict[str, Any], list[int]]:
    """The fields of a row (all but the frames) and its frames' shape (see `read_row_head`)."""
    row = read_row_head(head, length)
    return row.fields, row.shape


def decode_row(blob: bytes, shape: tuple[int, ...] | None = None,
               max_bytes: int = codec.DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """One buffer row back into fields; raw frames are a read-only view of `blob`, coded
    ones are decoded, only when they have `shape` (when given) and fit in `max_bytes`."""
    row = read_row_head(blob[: row_head_size(blob)], len(blob))
    if shape is not None and tuple(row.shape) != tuple(shape):
        raise SampleError(f"frames: shape {row.shape}, expected {list(shape)}")
    if math.prod(row.shape) > max_bytes:
        raise CodecError(f"frames of shape {row.shape} exceed the limit of {max_bytes} bytes")
    row.fields["frames"] = frames_mod.decode(memoryview(blob)[row.offset:], row.codec, row.shape)
    return row.fields
