"""The buffer row: what a collector finishes, the server checks by its head and the trainer
decodes, raw (`CR1`) or with coded frames (`CR2`)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import CodecError, SampleError
from pipeline.wire.frames import RAW_CODEC, FrameCodec
from pipeline.wire.rows import (
    CODED_ROW_MAGIC,
    ROW_MAGIC,
    decode_row,
    encode_row,
    read_row_head,
    row_head_size,
)
from pipeline.wire.schema import SampleSchema, empty_columns

SCHEMA = SampleSchema(height=6, width=8, frames=2, history=3)


def _sample(seed: int = 0) -> dict[str, np.ndarray]:
    cols = empty_columns(SCHEMA, 1)
    cols["frames"][:] = np.random.default_rng(seed).integers(0, 255, cols["frames"].shape, dtype=np.uint8)
    cols["speed"][:] = 4.5
    cols["targets"][:] = [[0.25, -0.5]]
    return {name: column[0] for name, column in cols.items()}


def test_a_raw_row_round_trips_and_its_frames_are_a_view_of_the_bytes() -> None:
    sample = _sample()
    row = encode_row(sample, "ep1", captured_at=12.5, policy_version=3)
    assert row.startswith(ROW_MAGIC)
    back = decode_row(row, SCHEMA.frames_shape)
    np.testing.assert_array_equal(back["frames"], sample["frames"])
    assert not back["frames"].flags.writeable  # mapped out of the row, not copied
    assert back["episode"] == "ep1" and back["captured_at"] == 12.5 and back["policy_version"] == 3
    assert back["targets"] == [0.25, -0.5] and back["speed"] == 4.5


def test_the_head_is_everything_but_the_frames() -> None:
    row = encode_row(_sample(), "ep1", 1.0, 0)
    head = read_row_head(row[: row_head_size(row)], len(row))
    assert head.codec == "raw" and head.shape == list(SCHEMA.frames_shape)
    assert head.offset == row_head_size(row) and head.frames_bytes == len(row) - head.offset
    assert "frames" not in head.fields and head.fields["episode"] == "ep1"


def test_a_coded_row_peeks_into_its_frames_and_decodes() -> None:
    sample = _sample(1)
    row = encode_row(sample, "ep1", 1.0, 0, FrameCodec("png"))
    assert row.startswith(CODED_ROW_MAGIC)
    head = read_row_head(row[: row_head_size(row)], len(row))
    assert head.codec == "png" and row_head_size(row) > head.offset  # the server sees the image header
    np.testing.assert_array_equal(decode_row(row, SCHEMA.frames_shape)["frames"], sample["frames"])


@pytest.mark.parametrize("change", ["cut", "magic", "shape"])
def test_a_damaged_row_is_refused(change: str) -> None:
    row = encode_row(_sample(), "ep1", 1.0, 0, RAW_CODEC)
    if change == "cut":
        with pytest.raises(CodecError, match="bytes"):
            decode_row(row[:-1])
    elif change == "magic":
        with pytest.raises(CodecError, match="unknown format"):
            decode_row(b"XX9" + row[3:])
    else:
        with pytest.raises(SampleError, match="shape"):
            decode_row(row, (1, 6, 8, 3))
