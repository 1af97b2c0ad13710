"""Stacking: drawn buffer rows back into the columns of a batch, checked against the schema."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.errors import SampleError
from pipeline.wire import frames as frames_mod
from pipeline.wire.rows import read_row_head, row_head_size
from pipeline.wire.schema import DTYPES, FIELDS, SampleSchema


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
            column = np.asarray(values, dtype=DTYPES[name])
        except (ValueError, TypeError, OverflowError):
            raise SampleError(f"{name}: not numbers of one shape in every row") from None
        if empty:
            column = column.reshape((len(headers), *row_shape))
        columns[name] = column
    return columns


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


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Stack sample rows into columns (the `SampleSet.columns` layout), keeping dtypes."""
    if not rows:
        raise ValueError("rows_to_columns needs at least one row")
    return {name: np.stack([np.asarray(r[name]) for r in rows]) for name in FIELDS if name in rows[0]}
