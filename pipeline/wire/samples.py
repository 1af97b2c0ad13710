"""The sample and sample-set schema: what a collector sends and what the trainer draws.

A sample set is columnar: every field is one array whose first axis is the sample
index, one balancing round. On the wire it is one stream entry of finished buffer rows
(one per sample), which the server checks and Redis moves into the buffer; the trainer
stacks drawn rows back into a batch.

Fields (n = samples, F = context frames, N = history length):
    frames     uint8   [n, F, H, W, 3]  hood frames, oldest first, the last is "now"
    speed      float32 [n]              metres per second
    purpose    float32 [n, 2]           distance (m) and direction (rad, + = left) to the target
    controls   float32 [n, 2]           controls in effect before this frame's action
    targets    float32 [n, 2]           the expert's controls (label-shifted), in [-1, 1]
    history    float32 [n, N, 5]        past HISTORY_FEATURES, oldest first, excluding "now"
    game_time  float64 [n]              seconds on the game clock
Control vectors follow `pipeline.config.CONTROL_NAMES`.

Every row also carries its provenance (not a model input): `captured_at`, the collector's
wall-clock time of the frame, and `policy_version`, the weights version that drove the car
then (0: the NPC or a human). The trainer reports the age and policy lag of what it trains on.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.config import CONTROL_NAMES, Config, InputsConfig
from pipeline.errors import CodecError, SampleError
from pipeline.wire import codec
from pipeline.wire import frames as frames_mod
from pipeline.wire.frames import RAW_CODEC, FrameCodec

FORMAT_VERSION = 3
#: A sample set in full ("entry") is `meta` (msgpack: v, set_id, output, collector, episode,
#: environment, n, row_bytes) and fields `r0`..`r{n-1}`, each a finished buffer row. On the
#: wire a collector writes the rows as keys of their own and puts a manifest on the stream:
#: the meta and each row's head (prefix and header, everything but the frames). The server
#: checks the manifest, then has Redis check each row against its head and rename it into
#: the buffer: the frames cross the network twice (collector in, trainer out).
META_FIELD = "meta"
#: the most of a row's head (or a meta) anyone reads when checking a set
MAX_HEAD_BYTES = 65536
SET_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
HISTORY_FEATURES: tuple[str, ...] = (
    "acceleration_braking",
    "steering",
    "speed",
    "purpose_distance",
    "purpose_direction",
)
FIELDS: tuple[str, ...] = ("frames", "speed", "purpose", "controls", "targets", "history", "game_time")
_DTYPES = {
    "frames": np.uint8,
    "speed": np.float32,
    "purpose": np.float32,
    "controls": np.float32,
    "targets": np.float32,
    "history": np.float32,
    "game_time": np.float64,
}
#: Per-row metadata that is not a model input (see the module docstring).
PROVENANCE: tuple[str, ...] = ("captured_at", "policy_version")
MAX_SPEED_MPS = 150.0  # the default of `[game] max_speed_mps`
MAX_NAME_LEN = 128


@dataclass(frozen=True)
class ContextSpec:
    """Which past frames and vectors a sample carries, in game ticks; shared by collector and player."""

    fps: float
    frames: int
    frame_stride_s: float
    history: int
    history_stride_s: float
    label_shift_s: float

    @classmethod
    def from_inputs(cls, inputs: InputsConfig, fps: float) -> ContextSpec:
        if inputs.sequence_length > 1 and inputs.stacked_frames > 1:
            raise SampleError("inputs: use stacked_frames or sequence_length, not both")
        if inputs.sequence_length > 1:
            frames, stride = inputs.sequence_length, inputs.sequence_stride_s
        else:
            frames, stride = inputs.stacked_frames, inputs.stacked_stride_s
        return cls(
            fps=fps,
            frames=frames,
            frame_stride_s=stride,
            history=inputs.history_length,
            history_stride_s=inputs.history_stride_s,
            label_shift_s=inputs.label_shift_s,
        )

    def ticks(self, seconds: float) -> int:
        """Game ticks closest to `seconds` (at least 1 for a positive duration)."""
        return max(1, round(seconds * self.fps)) if seconds > 0 else 0

    @property
    def frame_stride(self) -> int:
        return self.ticks(self.frame_stride_s)

    @property
    def history_stride(self) -> int:
        return self.ticks(self.history_stride_s)

    @property
    def label_shift(self) -> int:
        return self.ticks(self.label_shift_s)

    @property
    def lookback(self) -> int:
        """Ticks of past observations needed to build one sample."""
        return max((self.frames - 1) * self.frame_stride, self.history * self.history_stride)


@dataclass(frozen=True)
class SampleSchema:
    """The shapes a sample must have under the active config; everything else is rejected."""

    height: int
    width: int
    frames: int
    history: int
    controls: int = len(CONTROL_NAMES)
    max_samples: int = 4096
    #: how rows' frames are coded under this config (`[buffers] frame_codec`); the server
    #: accepts only this one, readers decode any they know (rows from before a change)
    frame_codec: str = frames_mod.RAW
    #: the fastest speed a sample may report, m/s (`[game] max_speed_mps`)
    max_speed: float = MAX_SPEED_MPS

    @classmethod
    def from_config(cls, cfg: Config) -> SampleSchema:
        ctx = ContextSpec.from_inputs(cfg.inputs, cfg.game.fps)
        return cls(cfg.game.hood_height, cfg.game.hood_width, ctx.frames, ctx.history,
                   frame_codec=cfg.buffers.frame_codec, max_speed=cfg.game.max_speed_mps)

    @property
    def frames_shape(self) -> tuple[int, int, int, int]:
        """One row's frames: [F, H, W, 3]."""
        return (self.frames, self.height, self.width, 3)

    @property
    def max_head_bytes(self) -> int:
        """The most a valid row's head (prefix and header) can take under this schema: its
        numbers at 9 bytes each (msgpack float64) plus names, the episode and the frames'
        shape. Longer heads are refused before they are decoded (bloat costs memory and CPU)."""
        numbers = sum(math.prod(shape) for name, shape in self.row_shapes().items() if name != "frames")
        return 1024 + MAX_NAME_LEN + 9 * (numbers + len(PROVENANCE)) + frames_mod.FRAMES_PEEK

    @property
    def max_manifest_bytes(self) -> int:
        """The most a valid manifest can take: a meta and `max_samples` row heads."""
        return MAX_HEAD_BYTES + self.max_samples * (self.max_head_bytes + 8)

    def row_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "frames": (self.frames, self.height, self.width, 3),
            "speed": (),
            "purpose": (2,),
            "controls": (self.controls,),
            "targets": (self.controls,),
            "history": (self.history, len(HISTORY_FEATURES)),
            "game_time": (),
        }

    def validate_columns(self, columns: Any) -> int:
        """Check every field's dtype, shape and values; return the number of samples."""
        if not isinstance(columns, dict):
            raise SampleError("columns must be a map of field -> array")
        unknown = set(columns) - set(FIELDS)
        missing = set(FIELDS) - set(columns)
        if unknown or missing:
            raise SampleError(f"fields wrong: missing {sorted(missing)}, unknown {sorted(unknown)}")
        n = None
        for name, row_shape in self.row_shapes().items():
            arr = columns[name]
            if not isinstance(arr, np.ndarray):
                raise SampleError(f"{name}: expected an array, got {type(arr).__name__}")
            if arr.dtype != _DTYPES[name]:
                raise SampleError(f"{name}: dtype {arr.dtype}, expected {np.dtype(_DTYPES[name])}")
            if arr.ndim != 1 + len(row_shape) or tuple(arr.shape[1:]) != row_shape:
                raise SampleError(f"{name}: shape {list(arr.shape)}, expected [n, *{list(row_shape)}]")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise SampleError(f"{name}: {arr.shape[0]} samples, other fields have {n}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise SampleError(f"{name}: contains NaN or infinity")
        assert n is not None
        if not 1 <= n <= self.max_samples:
            raise SampleError(f"a set must hold 1..{self.max_samples} samples, got {n}")
        for name in ("controls", "targets"):
            if np.abs(columns[name]).max() > 1.0 + 1e-6:
                raise SampleError(f"{name}: values outside [-1, 1]")
        if np.abs(columns["speed"]).max() > self.max_speed:
            raise SampleError(f"speed: values beyond {self.max_speed} m/s ([game] max_speed_mps)")
        return int(n)


@dataclass
class SampleSet:
    """One balancing round for one output, as sent by a collector."""

    output: str
    collector: str
    episode: str
    columns: dict[str, np.ndarray]
    environment: dict[str, Any]
    #: unique per set: a set sent twice (a reply lost in a partition) lands on the same sample ids
    set_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: per sample `captured_at` (float64, epoch s) and `policy_version` (int); None: now, and 0
    provenance: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.provenance is None:  # fixed once: a set encoded twice must give the same rows
            n = len(self)
            self.provenance = {"captured_at": np.full(n, time.time()), "policy_version": np.zeros(n, np.int64)}

    def __len__(self) -> int:
        return int(self.columns["speed"].shape[0])

    def entry(self, frame_codec: FrameCodec = RAW_CODEC) -> dict[str, bytes]:
        """The set in full: `meta` plus one finished buffer row per sample (see `check_entry`),
        its frames coded with `frame_codec`."""
        rows = self.rows(frame_codec)
        meta = codec.encode(
            {
                "v": FORMAT_VERSION,
                "set_id": self.set_id,
                "output": self.output,
                "collector": self.collector,
                "episode": self.episode,
                "environment": self.environment,
                "n": len(self),
                "row_bytes": [len(row) for row in rows],
            }
        )
        return {META_FIELD: meta, **{row_field(i): row for i, row in enumerate(rows)}}

    def rows(self, frame_codec: FrameCodec = RAW_CODEC) -> list[bytes]:
        """Each sample encoded on its own, as stored in a buffer (see `encode_row`)."""
        n = len(self)
        assert self.provenance is not None
        captured = np.asarray(self.provenance["captured_at"], np.float64)
        versions = np.asarray(self.provenance["policy_version"], np.int64)
        return [
            encode_row({k: np.asarray(v[i]) for k, v in self.columns.items()}, self.episode,
                       float(captured[i]), int(versions[i]), frame_codec)
            for i in range(n)
        ]


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


def row_field(i: int) -> str:
    """The stream entry field of a set's i-th row."""
    return f"r{i}"


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


def set_id_of(meta: bytes) -> str | None:
    """The set id a meta names, when it names a valid one (to find or delete its rows)."""
    try:
        set_id = codec.decode(meta, max_bytes=MAX_HEAD_BYTES)["set_id"]
    except (CodecError, KeyError, TypeError):
        return None
    return set_id if isinstance(set_id, str) and SET_ID.fullmatch(set_id) else None


def manifest(entry: Mapping[str, bytes]) -> dict[str, bytes]:
    """What goes on the stream for a set in full: the meta and each row's head."""
    return {name: value if name == META_FIELD else value[: row_head_size(value)] for name, value in entry.items()}


@dataclass(frozen=True)
class EntryView:
    """A set as a check sees it: per field its first bytes (the whole meta, a row's head)
    and its full length."""

    heads: dict[str, tuple[bytes, int]]

    @classmethod
    def of(cls, fields: Mapping[bytes | str, bytes]) -> EntryView:
        """The view of a set in full (meta and whole rows)."""
        heads = {}
        for name, value in _named(fields).items():
            heads[name] = (value[: row_head_size(value)] if name != META_FIELD else value[:MAX_HEAD_BYTES], len(value))
        return cls(heads)

    @classmethod
    def of_manifest(cls, fields: Mapping[bytes | str, bytes]) -> EntryView:
        """The view of a manifest: the heads as they came, the lengths the meta declares (a
        meta that cannot say is refused by `check_entry`, which reads it again)."""
        named = _named(fields)
        try:
            declared = codec.decode(named.get(META_FIELD, b""), max_bytes=MAX_HEAD_BYTES).get("row_bytes")
        except (CodecError, AttributeError):
            declared = None
        heads = {}
        for name, value in named.items():
            index = name[1:]
            length = len(value)
            # isdecimal() alone admits other scripts' digits ("r٣") and isdigit() admits "²",
            # which int() refuses: only ASCII digits name a row
            if (name != META_FIELD and isinstance(declared, list) and index.isascii() and index.isdecimal()
                    and int(index) < len(declared)):
                length = declared[int(index)] if isinstance(declared[int(index)], int) else -1
            heads[name] = (value[:MAX_HEAD_BYTES], length)
        return cls(heads)

    @property
    def nbytes(self) -> int:
        return sum(length for _, length in self.heads.values())


def _named(fields: Mapping[bytes | str, bytes]) -> dict[str, bytes]:
    return {(k.decode(errors="replace") if isinstance(k, bytes) else k): v for k, v in fields.items()}


@dataclass(frozen=True)
class SetHeader:
    """What a checked entry says about its set; the rows stay where they are."""

    set_id: str
    output: str
    collector: str
    episode: str
    environment: dict[str, Any]
    n: int


def check_entry(
    view: EntryView, schema: SampleSchema, outputs: list[str], max_bytes: int = codec.DEFAULT_MAX_BYTES
) -> SetHeader:
    """Validate one stream entry from its meta and row headers; raise CodecError/SampleError
    with the reason. Frames are raw uint8 of a checked shape and byte count, so every
    value of the set is checked without reading them."""
    if view.nbytes > max_bytes:
        raise CodecError(f"entry of {view.nbytes} bytes exceeds the limit of {max_bytes}")
    if META_FIELD not in view.heads:
        raise SampleError(f"entry has no {META_FIELD!r} field (not a sample set of format version {FORMAT_VERSION})")
    meta, meta_len = view.heads[META_FIELD]
    if len(meta) < meta_len:
        raise SampleError(f"meta of {meta_len} bytes is beyond {MAX_HEAD_BYTES}")
    msg = codec.decode(meta, max_bytes=max_bytes)
    if not isinstance(msg, dict) or msg.get("v") != FORMAT_VERSION:
        raise SampleError(f"not a sample set of format version {FORMAT_VERSION}")
    output = msg.get("output")
    if output not in outputs:
        raise SampleError(f"unknown output {output!r}; this run has {outputs}")
    if not isinstance(msg.get("set_id"), str) or not SET_ID.fullmatch(msg["set_id"]):
        raise SampleError(f"set_id must match {SET_ID.pattern} (it names keys)")
    for key in ("collector", "episode"):
        value = msg.get(key)
        # copied into every buffer row id/header: a long one would multiply Redis memory by the set size
        if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LEN:
            raise SampleError(f"{key} must be a string of 1..{MAX_NAME_LEN} characters")
    env = msg.get("environment")
    if not isinstance(env, dict):
        raise SampleError("environment must be a map")
    n = msg.get("n")
    if not isinstance(n, int) or not 1 <= n <= schema.max_samples:
        raise SampleError(f"a set must hold 1..{schema.max_samples} samples, got {n!r}")
    expected = {META_FIELD, *(row_field(i) for i in range(n))}
    if set(view.heads) != expected:
        missing, unknown = sorted(expected - set(view.heads))[:5], sorted(set(view.heads) - expected)[:5]
        raise SampleError(f"entry fields wrong for {n} rows: missing {missing}, unknown {unknown}")
    with np.errstate(over="ignore", invalid="ignore"):  # a value beyond float32 becomes inf: refused below
        schema.validate_columns(_header_columns(view, msg["episode"], n, schema))
    declared = msg.get("row_bytes")
    if not isinstance(declared, list) or len(declared) != n:
        raise SampleError(f"row_bytes must list the byte count of each of the {n} rows")
    for i, length in enumerate(declared):
        if length != view.heads[row_field(i)][1]:
            raise SampleError(f"row {i}: {view.heads[row_field(i)][1]} bytes, the meta says {length!r}")
    return SetHeader(msg["set_id"], output, msg["collector"], msg["episode"], env, n)


_ROW_HEADER_KEYS = frozenset({"v", "episode", *FIELDS, *PROVENANCE}) - {"frames"}
MAX_POLICY_VERSION = 2**31 - 1


def _header_columns(view: EntryView, episode: str, n: int, schema: SampleSchema) -> dict[str, Any]:
    """The set's columns from its row headers; the frames as a zero-copy stand-in of their shape."""
    headers = []
    for i in range(n):
        head, length = view.heads[row_field(i)]
        if min(len(head), row_head_size(head)) > schema.max_head_bytes:
            raise SampleError(f"row {i}: a head of {row_head_size(head)} bytes, beyond the "
                              f"{schema.max_head_bytes} this config's rows can need")
        row = read_row_head(head, length)
        header, shape = row.fields, row.shape
        if row.codec != schema.frame_codec:
            raise SampleError(f"row {i}: frames coded as {row.codec!r}, this run's [buffers] frame_codec "
                              f"is {schema.frame_codec!r}")
        if tuple(shape) == schema.frames_shape and row.codec != frames_mod.RAW:  # the size the image declares
            frames_mod.check_head(head[row.offset:], row.frames_bytes, row.codec, shape)
        if set(header) != _ROW_HEADER_KEYS:
            raise SampleError(f"row {i}: fields wrong: {sorted(set(header) ^ _ROW_HEADER_KEYS)}")
        if header.pop("episode") != episode:
            raise SampleError(f"row {i}: episode differs from the set's")
        check_provenance(header.pop("captured_at"), header.pop("policy_version"), i)
        if tuple(shape) != schema.row_shapes()["frames"]:
            raise SampleError(f"frames: shape {shape}, expected {list(schema.row_shapes()['frames'])}")
        headers.append(header)
    columns = header_columns(headers, schema)
    columns["frames"] = np.broadcast_to(np.zeros((), np.uint8), (n, *schema.row_shapes()["frames"]))
    return columns


def check_provenance(captured_at: Any, policy_version: Any, row: int) -> None:
    """A row's capture time is a finite, non-negative float and its policy version a
    non-negative int (a collector may lie about its own rows, not break the trainer's stats)."""
    if not isinstance(captured_at, float) or not math.isfinite(captured_at) or captured_at < 0:
        raise SampleError(f"row {row}: captured_at must be a finite, non-negative number of seconds")
    if type(policy_version) is not int or not 0 <= policy_version <= MAX_POLICY_VERSION:
        raise SampleError(f"row {row}: policy_version must be an int in 0..{MAX_POLICY_VERSION}")


def header_columns(headers: list[dict[str, Any]], schema: SampleSchema) -> dict[str, np.ndarray]:
    """The non-frame fields of decoded rows as columns of their dtypes (shapes and values
    are the schema's to check)."""
    columns = {}
    for name, row_shape in schema.row_shapes().items():
        if name == "frames":
            continue
        try:
            values = [h[name] for h in headers]
        except KeyError:
            raise SampleError(f"{name}: missing from a row") from None
        empty = math.prod(row_shape) == 0
        if empty and any(v != [] for v in values):  # an empty field is encoded as [], and must be nothing else
            raise SampleError(f"{name}: must be empty ([]) under this config")
        try:
            column = np.asarray(values, dtype=_DTYPES[name])
        except (ValueError, TypeError, OverflowError):
            raise SampleError(f"{name}: not numbers of one shape in every row") from None
        if empty:
            column = column.reshape((len(headers), *row_shape))
        columns[name] = column
    return columns


def decode_entry(
    fields: Mapping[bytes | str, bytes], schema: SampleSchema, outputs: list[str],
    max_bytes: int = codec.DEFAULT_MAX_BYTES,
) -> SampleSet:
    """Check a whole stream entry and decode its set (for readers that need the frames)."""
    head = check_entry(EntryView.of(fields), schema, outputs, max_bytes)
    by_name = _named(fields)
    columns = stack_rows([by_name[row_field(i)] for i in range(head.n)], schema)
    return SampleSet(head.output, head.collector, head.episode, columns, head.environment, head.set_id)


def decode_entry_coded(
    fields: Mapping[bytes | str, bytes], schema: SampleSchema, outputs: list[str],
    max_bytes: int = codec.DEFAULT_MAX_BYTES,
) -> tuple[SampleSet, list[bytes]]:
    """Check a whole entry and decode its set but the frames, which stay as they were coded
    (their declared size checked with the set): what a recorder keeps. The set's `frames`
    column is a zero-copy stand-in of the right shape."""
    head = check_entry(EntryView.of(fields), schema, outputs, max_bytes)
    by_name = _named(fields)
    blobs = [by_name[row_field(i)] for i in range(head.n)]
    heads = [read_row_head(blob[: row_head_size(blob)], len(blob)) for blob in blobs]
    with np.errstate(over="ignore", invalid="ignore"):
        columns = header_columns([h.fields for h in heads], schema)
    columns["frames"] = np.broadcast_to(np.zeros((), np.uint8), (head.n, *schema.frames_shape))
    coded = [blob[h.offset:] for blob, h in zip(blobs, heads, strict=True)]
    return SampleSet(head.output, head.collector, head.episode, columns, head.environment, head.set_id), coded


Allocator = Callable[[tuple[int, ...], np.dtype], np.ndarray]


def stack_rows(blobs: list[bytes], schema: SampleSchema, alloc: Allocator | None = None,
               provenance: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Decode buffer rows and stack them into batch columns, checked against the schema.

    `alloc(shape, dtype)` may provide the frames array (e.g. pinned memory for a GPU), so
    the frames are copied once, from Redis' bytes straight into it. A `provenance` dict
    receives the rows' `captured_at` and `policy_version` arrays.
    """
    heads = [read_row_head(blob[: row_head_size(blob)], len(blob)) for blob in blobs]
    shape = schema.frames_shape
    for i, head in enumerate(heads):  # before anything is allocated or decoded
        if tuple(head.shape) != shape:
            raise SampleError(f"row {i}: frames shape {head.shape}, expected {list(shape)}")
    rows = [head.fields for head in heads]
    if provenance is not None:
        provenance["captured_at"] = np.asarray([r["captured_at"] for r in rows], np.float64)
        provenance["policy_version"] = np.asarray([r["policy_version"] for r in rows], np.int64)
    with np.errstate(over="ignore", invalid="ignore"):  # a value beyond float32 becomes inf: refused below
        columns = header_columns(rows, schema)
    batch = (len(blobs), *shape)
    out = alloc(batch, np.dtype(np.uint8)) if alloc is not None else np.empty(batch, np.uint8)
    for i, (blob, head) in enumerate(zip(blobs, heads, strict=True)):  # one copy, or one decode, per row
        frames_mod.decode(memoryview(blob)[head.offset:], head.codec, shape, out=out[i])
    columns["frames"] = out
    schema.validate_columns(columns)
    return columns


def empty_columns(schema: SampleSchema, n: int) -> dict[str, np.ndarray]:
    """Zero-filled columns of the right shapes, for synthetic batches and tests."""
    return {name: np.zeros((n, *shape), dtype=_DTYPES[name]) for name, shape in schema.row_shapes().items()}
