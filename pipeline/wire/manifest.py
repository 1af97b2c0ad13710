"""Sample sets on the stream: a set, its manifest, and the checks a set passes before
its rows are routed.

A sample set in full ("entry") is `meta` (msgpack: v, set_id, output, collector, episode,
environment, n, row_bytes) and fields `r0`..`r{n-1}`, each a finished buffer row. On the
wire a collector writes the rows as keys of their own and puts a manifest on the stream:
the meta and each row's head (prefix and header, everything but the frames). The server
checks the manifest, then has Redis check each row against its head and rename it into
the buffer: the frames cross the network twice (collector in, trainer out).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import CodecError, SampleError
from pipeline.wire import codec
from pipeline.wire import frames as frames_mod
from pipeline.wire.frames import RAW_CODEC, FrameCodec
from pipeline.wire.rows import (
    FORMAT_VERSION,
    MAX_HEAD_BYTES,
    encode_row,
    read_row_head,
    row_head_size,
)
from pipeline.wire.schema import FIELDS, MAX_NAME_LEN, PROVENANCE, SampleSchema, check_provenance
from pipeline.wire.stacking import header_columns, stack_rows

META_FIELD = "meta"
SET_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


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
        return _entry(self, self.rows(frame_codec))

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


Sample = Mapping[str, Any]


@dataclass
class SampleRows:
    """One balancing round for one output as a collector holds it: its samples one dict
    each (`FIELDS` and `PROVENANCE`), finished into rows one by one, with no columns in
    between. Its entry is byte for byte the entry of the same samples as a `SampleSet`."""

    output: str
    collector: str
    episode: str
    samples: list[Sample]
    environment: dict[str, Any]
    set_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __len__(self) -> int:
        return len(self.samples)

    def entry(self, frame_codec: FrameCodec = RAW_CODEC) -> dict[str, bytes]:
        """The set in full, as `SampleSet.entry`."""
        rows = [encode_row({name: sample[name] for name in FIELDS}, self.episode, float(sample["captured_at"]),
                           int(sample["policy_version"]), frame_codec) for sample in self.samples]
        return _entry(self, rows)


@dataclass
class CodedRows:
    """A set whose rows are finished already: a synthetic collector (`charles bench fleet`)
    sends the same rows again under a fresh set id (`again`), without coding them again."""

    output: str
    collector: str
    episode: str
    rows: list[bytes]
    environment: dict[str, Any] = field(default_factory=dict)
    set_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __len__(self) -> int:
        return len(self.rows)

    def entry(self, frame_codec: FrameCodec = RAW_CODEC) -> dict[str, bytes]:
        """The set in full; its rows keep the codec they were made with."""
        return _entry(self, self.rows)

    def again(self) -> CodedRows:
        return CodedRows(self.output, self.collector, self.episode, self.rows, self.environment)


#: what a collector publishes: columns (benchmarks, tests), its samples as they are, or rows
OutgoingSet = SampleSet | SampleRows | CodedRows


def _entry(sample_set: OutgoingSet, rows: list[bytes]) -> dict[str, bytes]:
    """A set's meta and its finished rows: the entry a collector publishes."""
    meta = codec.encode(
        {
            "v": FORMAT_VERSION,
            "set_id": sample_set.set_id,
            "output": sample_set.output,
            "collector": sample_set.collector,
            "episode": sample_set.episode,
            "environment": sample_set.environment,
            "n": len(rows),
            "row_bytes": [len(row) for row in rows],
        }
    )
    return {META_FIELD: meta, **{row_field(i): row for i, row in enumerate(rows)}}


def row_field(i: int) -> str:
    """The stream entry field of a set's i-th row."""
    return f"r{i}"


@dataclass(frozen=True)
class SetMeta:
    """A set's meta, decoded once per entry: the check, the row lookups and the cleanup of a
    refused set all read this one decoding."""

    #: the decoded meta (anything msgpack holds: the check says whether it is a meta), or
    #: None when it did not decode
    value: Any
    #: why it did not decode (`check_entry` raises it as a CodecError)
    error: str | None = None

    @classmethod
    def read(cls, raw: bytes) -> SetMeta:
        """Decode a meta of at most `MAX_HEAD_BYTES` (a longer one is refused, never read)."""
        try:
            return cls(codec.decode(raw, max_bytes=MAX_HEAD_BYTES))
        except CodecError as exc:
            return cls(None, str(exc))

    @property
    def set_id(self) -> str | None:
        """The set id it names, when it names a valid one (to find or delete its rows)."""
        set_id = self.value.get("set_id") if isinstance(self.value, dict) else None
        return set_id if isinstance(set_id, str) and SET_ID.fullmatch(set_id) else None

    @property
    def row_bytes(self) -> list[Any] | None:
        """The byte count it declares for each row, when it declares a list."""
        declared = self.value.get("row_bytes") if isinstance(self.value, dict) else None
        return declared if isinstance(declared, list) else None


def manifest(entry: Mapping[str, bytes]) -> dict[str, bytes]:
    """What goes on the stream for a set in full: the meta and each row's head."""
    return {name: value if name == META_FIELD else value[: row_head_size(value)] for name, value in entry.items()}


@dataclass(frozen=True)
class EntryView:
    """A set as a check sees it: per field its first bytes (the whole meta, a row's head)
    and its full length."""

    heads: dict[str, tuple[bytes, int]]
    meta: SetMeta

    @classmethod
    def of(cls, fields: Mapping[bytes | str, bytes], meta: SetMeta | None = None) -> EntryView:
        """The view of a set in full (meta and whole rows); `meta` when it is decoded already."""
        heads = {}
        named = _named(fields)
        for name, value in named.items():
            heads[name] = (value[: row_head_size(value)] if name != META_FIELD else value[:MAX_HEAD_BYTES], len(value))
        return cls(heads, meta if meta is not None else SetMeta.read(named.get(META_FIELD, b"")))

    @classmethod
    def of_manifest(cls, fields: Mapping[bytes | str, bytes], meta: SetMeta | None = None) -> EntryView:
        """The view of a manifest: the heads as they came, the lengths the meta declares (a
        meta that cannot say is refused by `check_entry`)."""
        named = _named(fields)
        if meta is None:
            meta = SetMeta.read(named.get(META_FIELD, b""))
        declared = meta.row_bytes
        heads = {}
        for name, value in named.items():
            index = name[1:]
            length = len(value)
            # isdecimal() alone admits other scripts' digits ("r٣") and isdigit() admits "²",
            # which int() refuses: only ASCII digits name a row
            if (name != META_FIELD and declared is not None and index.isascii() and index.isdecimal()
                    and int(index) < len(declared)):
                length = declared[int(index)] if isinstance(declared[int(index)], int) else -1
            heads[name] = (value[:MAX_HEAD_BYTES], length)
        return cls(heads, meta)

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
    if view.meta.error is not None:
        raise CodecError(view.meta.error)
    msg = view.meta.value
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


def decode_entry(
    fields: Mapping[bytes | str, bytes], schema: SampleSchema, outputs: list[str],
    max_bytes: int = codec.DEFAULT_MAX_BYTES, meta: SetMeta | None = None,
) -> SampleSet:
    """Check a whole stream entry and decode its set (for readers that need the frames);
    `meta` when the entry's meta is decoded already."""
    head = check_entry(EntryView.of(fields, meta), schema, outputs, max_bytes)
    by_name = _named(fields)
    columns = stack_rows([by_name[row_field(i)] for i in range(head.n)], schema)
    return SampleSet(head.output, head.collector, head.episode, columns, head.environment, head.set_id)


def decode_entry_coded(
    fields: Mapping[bytes | str, bytes], schema: SampleSchema, outputs: list[str],
    max_bytes: int = codec.DEFAULT_MAX_BYTES, meta: SetMeta | None = None,
) -> tuple[SampleSet, list[bytes]]:
    """Check a whole entry and decode its set but the frames, which stay as they were coded
    (their declared size checked with the set): what a recorder keeps. The set's `frames`
    column is a zero-copy stand-in of the right shape."""
    head = check_entry(EntryView.of(fields, meta), schema, outputs, max_bytes)
    by_name = _named(fields)
    blobs = [by_name[row_field(i)] for i in range(head.n)]
    heads = [read_row_head(blob[: row_head_size(blob)], len(blob)) for blob in blobs]
    with np.errstate(over="ignore", invalid="ignore"):
        columns = header_columns([h.fields for h in heads], schema)
    columns["frames"] = np.broadcast_to(np.zeros((), np.uint8), (head.n, *schema.frames_shape))
    coded = [blob[h.offset:] for blob, h in zip(blobs, heads, strict=True)]
    return SampleSet(head.output, head.collector, head.episode, columns, head.environment, head.set_id), coded
