"""Stacking: drawn rows back into a batch's columns, checked, frames copied once."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import SampleError
from pipeline.wire.manifest import SampleSet
from pipeline.wire.schema import SampleSchema
from pipeline.wire.stacking import rows_to_columns, stack_rows
from tests.factories import columns, tiny_config


def test_rows_stack_back_into_the_columns_they_came_from() -> None:
    cfg = tiny_config()
    schema = SampleSchema.from_config(cfg)
    cols = columns(schema, 4, seed=2)
    sent = SampleSet("steering", "c", "e", cols, {}, provenance={
        "captured_at": np.arange(4, dtype=np.float64), "policy_version": np.array([0, 1, 2, 3])})
    allocated = []

    def alloc(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        allocated.append(np.zeros(shape, dtype))
        return allocated[-1]

    provenance: dict[str, np.ndarray] = {}
    got = stack_rows(sent.rows(), schema, alloc, provenance)
    for name, column in cols.items():
        np.testing.assert_array_equal(got[name], column)
        assert got[name].dtype == column.dtype
    assert got["frames"] is allocated[0]  # the frames went straight into the caller's memory
    assert provenance["policy_version"].tolist() == [0, 1, 2, 3]


def test_a_row_of_another_frame_shape_is_refused_before_anything_is_allocated() -> None:
    schema = SampleSchema.from_config(tiny_config())
    other = SampleSchema.from_config(tiny_config(game={"hood_width": 16, "hood_height": 12}))
    rows = SampleSet("steering", "c", "e", columns(other, 1), {}).rows()

    def alloc(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        raise AssertionError("allocated for a batch that is refused")

    with pytest.raises(SampleError, match="frames shape"):
        stack_rows(rows, schema, alloc)


def test_rows_to_columns_keeps_dtypes_and_needs_a_row() -> None:
    rows = [{"speed": np.float32(i), "targets": np.array([0.1, 0.2], np.float32)} for i in range(3)]
    cols = rows_to_columns(rows)
    assert cols["speed"].dtype == np.float32 and cols["targets"].shape == (3, 2)
    with pytest.raises(ValueError):
        rows_to_columns([])
