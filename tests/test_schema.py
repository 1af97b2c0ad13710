"""The sample schema: context ticks from seconds, and what a set must be to be accepted."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import InputsConfig
from pipeline.errors import SampleError
from pipeline.wire.rows import encode_row, row_head_size
from pipeline.wire.schema import ContextSpec, SampleSchema, empty_columns
from tests.factories import columns, tiny_config


def test_context_seconds_become_ticks_of_the_game() -> None:
    spec = ContextSpec.from_inputs(InputsConfig(stacked_frames=3, stacked_stride_s=0.1, history_length=4,
                                                history_stride_s=0.2, label_shift_s=0.05), fps=30.0)
    assert (spec.frames, spec.frame_stride, spec.history_stride, spec.label_shift) == (3, 3, 6, 2)
    assert spec.lookback == max(2 * 3, 4 * 6)
    assert spec.ticks(0.0) == 0 and spec.ticks(0.001) == 1  # a positive duration is at least a tick


def test_stacked_frames_and_sequences_are_exclusive() -> None:
    with pytest.raises(SampleError, match="not both"):
        ContextSpec.from_inputs(InputsConfig(stacked_frames=2, sequence_length=3), fps=30.0)


def test_valid_columns_pass_and_every_kind_of_bad_one_is_named() -> None:
    schema = SampleSchema.from_config(tiny_config())
    assert schema.validate_columns(columns(schema, 3)) == 3
    bad = {
        "NaN or infinity": lambda c: c["speed"].__setitem__(0, np.nan),
        "dtype": lambda c: c.__setitem__("speed", c["speed"].astype(np.float64)),
        "shape": lambda c: c.__setitem__("purpose", np.zeros((3, 3), np.float32)),
        r"outside \[-1, 1\]": lambda c: c["targets"].__setitem__((0, 0), 1.5),
        "max_speed_mps": lambda c: c["speed"].__setitem__(0, schema.max_speed + 1),
        "samples, other fields": lambda c: c.__setitem__("game_time", np.zeros(2)),
        "missing": lambda c: c.pop("history"),
    }
    for reason, spoil in bad.items():
        cols = columns(schema, 3)
        spoil(cols)
        with pytest.raises(SampleError, match=reason):
            schema.validate_columns(cols)


def test_a_real_rows_head_fits_the_bound_the_server_enforces() -> None:
    schema = SampleSchema.from_config(tiny_config(inputs={"history_length": 20}))
    sample = {name: column[0] for name, column in empty_columns(schema, 1).items()}
    sample["history"][:] = np.float32(1 / 3)  # full-width floats: the longest encoding
    row = encode_row(sample, "e" * 128, 1.7e9, 2**31 - 1)
    assert row_head_size(row) <= schema.max_head_bytes
