"""Fuzzing (hypothesis) of everything that parses untrusted input: the codec, sample-set
validation, buffer rows, weights and the config.

The property everywhere: a clear Charles error (CodecError, SampleError, WeightsError,
ConfigError) or a value that passes every check; never another exception, never pickle.
The wire-level counterpart (dead letters from a running server) is in
tests/test_reliability_server.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.config import Config, load_config
from pipeline.errors import CharlesError, CodecError, ConfigError, SampleError, WeightsError
from pipeline.wire import codec
from pipeline.wire.manifest import decode_entry, row_field
from pipeline.wire.rows import ROW_MAGIC, decode_row, encode_row
from pipeline.wire.schema import FIELDS, SampleSchema
from pipeline.wire.weights import from_blob, to_blob
from tests.factories import sample_set, tiny_config

CFG = tiny_config()
SCHEMA = SampleSchema.from_config(CFG)
OUTPUTS = CFG.output_names()
GOOD = sample_set(CFG, "steering", 3, seed=1).entry()
ENTRY_FIELDS = st.sampled_from(sorted(GOOD))
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any unpickling during a fuzz test fails it."""

    def trap(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("pickle was called")

    monkeypatch.setattr(pickle, "loads", trap)
    monkeypatch.setattr(pickle, "load", trap)
    yield


def _check_valid_set(fields: dict[str, bytes]) -> None:
    """decode_entry (the server's check, then the frames) either refuses with a Charles
    error or returns a set that meets the schema."""
    try:
        s = decode_entry(fields, SCHEMA, OUTPUTS, max_bytes=1 << 20)
    except (CodecError, SampleError):
        return
    n = SCHEMA.validate_columns(s.columns)
    assert s.output in OUTPUTS and 1 <= n <= SCHEMA.max_samples
    for name in ("speed", "purpose", "controls", "targets", "history", "game_time"):
        assert np.isfinite(s.columns[name]).all()
    assert all(len(v) == n for v in s.columns.values())


# -- codec -------------------------------------------------------------------------------------

DTYPES = st.sampled_from(sorted(codec.ALLOWED_DTYPES) + ["|O", "<U4", "|S3", "|V8", ">f4", ">i8", "<c16", "<M8[s]",
                                                           "object", "", "O", "<f16", 5, None, b"|O"])
SHAPES = st.one_of(
    st.lists(st.integers(-2, 6), max_size=8),
    st.lists(st.integers(0, 2**64 - 1), max_size=3),
    st.just("12"), st.none(), st.lists(st.booleans(), max_size=2), st.lists(st.floats(), max_size=2),
)


@FUZZ
@given(dtype=DTYPES, shape=SHAPES, data=st.binary(max_size=256), kind=st.sampled_from([b"", b"O", b"V"]))
def test_array_encodings_only_whitelisted(dtype: Any, shape: Any, data: bytes, kind: bytes) -> None:
    payload = msgpack.packb({"a": {b"nd": True, b"type": dtype, b"kind": kind, b"shape": shape, b"data": data}},
                            use_bin_type=True)
    try:
        out = codec.decode(payload)["a"]
    except CodecError:
        return
    assert isinstance(out, np.ndarray) and out.dtype.str in codec.ALLOWED_DTYPES
    assert out.nbytes == len(data) and list(out.shape) == list(shape)


@FUZZ
@given(st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=8),
              st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=30,
))
def test_any_msgpack_value_decodes_or_is_refused(value: Any) -> None:
    try:
        codec.decode(msgpack.packb(value, use_bin_type=True))
    except CodecError:
        pass


def test_object_arrays_of_every_kind_never_unpickle() -> None:
    for arr in (np.array([1, "x"], dtype=object), np.array([{"a": 1}], dtype=object), np.array([None], dtype=object)):
        evil = msgpack.packb({"columns": {"frames": arr}}, default=msgpack_numpy.encode, use_bin_type=True)
        with pytest.raises(CodecError, match="not allowed"):
            codec.decode(evil)
        for name in ("meta", "r0"):
            with pytest.raises(CodecError):
                decode_entry({**GOOD, name: evil if name == "meta" else _row_with_header(evil)}, SCHEMA, OUTPUTS)


def _row_with_header(header: bytes) -> bytes:
    return ROW_MAGIC + len(header).to_bytes(4, "little") + header


def test_every_truncation_of_a_sample_set_is_refused() -> None:
    for name, value in GOOD.items():
        for cut in range(len(value)):
            with pytest.raises((CodecError, SampleError)):
                decode_entry({**GOOD, name: value[:cut]}, SCHEMA, OUTPUTS)
        with pytest.raises(SampleError, match="fields wrong|no 'meta'"):
            decode_entry({k: v for k, v in GOOD.items() if k != name}, SCHEMA, OUTPUTS)


@FUZZ
@given(ENTRY_FIELDS, st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_sample_sets_refused_or_valid(name: str, flips: list[tuple[int, int]]) -> None:
    data = bytearray(GOOD[name])
    for pos, value in flips:
        data[pos % len(data)] = value
    _check_valid_set({**GOOD, name: bytes(data)})


@FUZZ
@given(ENTRY_FIELDS, st.binary(min_size=0, max_size=64), st.integers(0, 1 << 20))
def test_spliced_sample_sets_refused_or_valid(name: str, junk: bytes, at: int) -> None:
    value = GOOD[name]
    at %= len(value) + 1
    _check_valid_set({**GOOD, name: value[:at] + junk + value[at:]})


def test_oversized_refused_before_decoding() -> None:
    total = sum(len(v) for v in GOOD.values())
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode_entry(GOOD, SCHEMA, OUTPUTS, max_bytes=total - 1)


# -- sample-set validation ------------------------------------------------------------------------

FIELD_DTYPES = st.sampled_from([np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_])
SPECIAL = st.sampled_from([0.0, 1.0, -1.0, 1.5, -7.0, 200.0, math.nan, math.inf, -math.inf, 1e30])


@st.composite
def column_sets(draw: st.DrawFn) -> dict[str, Any]:
    """Columns near the schema, with any field's dtype, shape, size or values possibly wrong."""
    n = draw(st.integers(0, 4))
    cols = sample_set(CFG, "steering", max(n, 1), seed=draw(st.integers(0, 5))).columns
    cols = {k: v[:n].copy() for k, v in cols.items()}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        change = draw(st.sampled_from(["dtype", "shape", "value", "drop", "length"]))
        arr = cols[name]
        if change == "dtype":
            cols[name] = arr.astype(draw(FIELD_DTYPES))
        elif change == "shape":
            cols[name] = arr.reshape(-1) if arr.ndim > 1 else arr.reshape(-1, 1)
        elif change == "value" and arr.size and arr.dtype.kind == "f":
            arr.flat[draw(st.integers(0, arr.size - 1))] = draw(SPECIAL)
        elif change == "drop":
            del cols[name]
        elif change == "length":
            cols[name] = np.concatenate([arr, arr[:1]]) if len(arr) else arr
    if draw(st.booleans()):
        cols["extra"] = np.zeros(n, np.float32)
    return cols


@FUZZ
@given(cols=column_sets(), output=st.sampled_from([*OUTPUTS, "flying", "", "steering\x00"]),
       episode=st.one_of(st.text(max_size=4), st.just("e" * 500), st.integers()),
       env=st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.lists(st.integers())))
def test_sample_sets_refused_with_a_reason_or_valid(cols: dict[str, Any], output: str, episode: Any, env: Any) -> None:
    try:
        fields = _entry_of(cols, output, episode, env)
    except CodecError:
        return  # float16/bool etc. that the sender could not even encode
    _check_valid_set(fields)


def _entry_of(cols: dict[str, Any], output: str, episode: Any, env: Any) -> dict[str, bytes]:
    """An entry as any sender could build it from columns: rows of whatever each column
    holds at that index (frames as raw bytes, whatever their dtype), `n` from `speed`."""
    n_rows = max((len(v) for v in cols.values()), default=0)
    n = len(cols["speed"]) if "speed" in cols else n_rows
    rows = {}
    for i in range(n_rows):
        row = {k: np.asarray(v[i]) for k, v in cols.items() if k != "frames" and i < len(v)}
        frames = cols["frames"][i] if "frames" in cols and i < len(cols["frames"]) else np.zeros(0, np.uint8)
        header = codec.encode({"v": 2, "episode": episode, "frames_shape": list(frames.shape), **row})
        rows[row_field(i)] = _row_with_header(header) + np.ascontiguousarray(frames).tobytes()
    meta = codec.encode({"v": 2, "set_id": "fuzz", "output": output, "collector": "fuzz", "episode": episode,
                         "environment": env, "n": n, "row_bytes": [len(row) for row in rows.values()]})
    return {"meta": meta, **rows}


@pytest.mark.parametrize("name, value, reason", [
    ("targets", math.nan, "NaN or infinity"), ("speed", math.inf, "NaN or infinity"),
    ("purpose", -math.inf, "NaN or infinity"), ("history", math.nan, "NaN or infinity"),
    ("targets", 1.5, "outside"), ("controls", -2.0, "outside"), ("speed", 1e6, "speed"),
])
def test_bad_values_named_in_the_error(name: str, value: float, reason: str) -> None:
    cfg = tiny_config(inputs={"history_length": 2})
    s = sample_set(cfg, "steering", 2)
    s.columns[name].flat[0] = value
    with pytest.raises(SampleError, match=reason):
        decode_entry(s.entry(), SampleSchema.from_config(cfg), cfg.output_names())


# -- buffer rows (what the trainer decodes) ---------------------------------------------------------

ROW = encode_row({k: v[0] for k, v in sample_set(CFG, "steering", 1).columns.items()}, "e", 1.7e9, 3)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(ROW) - 1), st.integers(0, 255)), max_size=6), st.integers(0, len(ROW)))
def test_buffer_rows_refused_or_decoded(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(ROW[:cut] if cut < len(ROW) else ROW)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    try:
        row = decode_row(bytes(data))
    except CharlesError:
        return
    assert isinstance(row, dict) and row["frames"].dtype == np.uint8


def test_buffer_row_with_a_pickle_inside_is_refused() -> None:
    header = msgpack.packb({"v": 2, "speed": np.array([1], dtype=object)}, default=msgpack_numpy.encode,
                           use_bin_type=True)
    with pytest.raises(CodecError, match="not allowed"):
        decode_row(ROW_MAGIC + len(header).to_bytes(4, "little") + header)


# -- weights -------------------------------------------------------------------------------------

BLOB = to_blob({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2)})


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(BLOB) - 1), st.integers(0, 255)), max_size=6),
       st.integers(0, len(BLOB)), st.binary(max_size=16))
def test_forged_weights_refused_or_parsed(flips: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    data = bytearray(BLOB[:cut] + tail)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    blob = bytes(data)
    with pytest.raises(WeightsError, match="sha256"):
        from_blob(blob, hashlib.sha256(blob + b"x").hexdigest())  # a hash mismatch is always refused
    try:
        tensors = from_blob(blob, hashlib.sha256(blob).hexdigest())
    except WeightsError:
        return
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())


@pytest.mark.parametrize("header", [
    {"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4]}},
    {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1 << 40]}},
    {"w": {"dtype": "OBJECT", "shape": [1], "data_offsets": [0, 4]}},
    {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
    {"__metadata__": {"x": 1}},
])
def test_lying_safetensors_headers_refused(header: dict[str, Any]) -> None:
    raw = json.dumps(header).encode()
    blob = len(raw).to_bytes(8, "little") + raw + b"\0" * 4
    with pytest.raises(WeightsError):
        from_blob(blob)


def test_pickled_weights_refused() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    with pytest.raises(WeightsError, match="safetensors"):
        from_blob(buf.getvalue(), hashlib.sha256(buf.getvalue()).hexdigest())


# -- config ----------------------------------------------------------------------------------------

ABSURD = [
    ("game", "hood_width", 100_000), ("game", "hood_height", 0), ("game", "fps", math.inf),
    ("game", "fps", 1e9), ("game", "cinematic_width", -640), ("buffers", "capacity", 10**12),
    ("buffers", "max_message_mb", 1e6), ("buffers", "start_fraction", 1.5), ("buffers", "stream_maxlen", 0),
    ("trainer", "batch_size", 10**9), ("trainer", "learning_rate", math.nan), ("trainer", "learning_rate", 1e6),
    ("trainer", "weight_decay", math.inf), ("collection", "episode_s", 1e12), ("collection", "max_backlog_sets", -1),
    ("collection", "map_seeds", [9, 1]), ("inputs", "stacked_frames", 10_000), ("inputs", "history_length", -5),
    ("player", "pps", 0), ("player", "pps", 1e9), ("player", "jpeg_quality", 101), ("dashboard", "port", 70000),
    ("unstuck", "grace_s", math.inf), ("trainer", "batch_size", [32]), ("trainer", "nonsense_key", 1),
]


@pytest.mark.parametrize("section, key, value", ABSURD)
def test_absurd_config_values_refused_with_the_key(section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides={section: {key: value}})
    assert f"{section}.{key}" in str(err.value) or section in str(err.value), str(err.value)


@FUZZ
@given(section=st.sampled_from(sorted(Config.model_fields)), key=st.text(min_size=1, max_size=12),
       value=st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none(), st.booleans(),
                       st.lists(st.integers(), max_size=3)))
def test_any_config_override_is_valid_or_a_config_error(section: str, key: str, value: Any) -> None:
    assume(section != "outputs")
    fields = Config.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
    key = sorted(fields)[hash(key) % len(fields)] if key.isascii() else key  # mostly real keys
    try:
        cfg = load_config(overrides={section: {key: value}})
    except ConfigError:
        return
    Config.from_json(cfg.to_json())  # what the server publishes, every role can load back


def test_config_from_redis_is_validated_too() -> None:
    text = json.loads(CFG.to_json())
    text["game"]["hood_width"] = 10**7
    with pytest.raises(ConfigError, match="game.hood_width"):
        Config.from_json(json.dumps(text))
    with pytest.raises(ConfigError):
        Config.from_json("{not json")


def test_server_refuses_an_absurd_config_file(tmp_path: Path) -> None:
    """The process stops before touching Redis and names the file, the key and what is allowed."""
    bad = tmp_path / "absurd.toml"
    bad.write_text("[game]\nhood_width = 100000\n[trainer]\nlearning_rate = nan\n")
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "server", "--config", str(bad)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path,
                         env={**os.environ, "CHARLES_REDIS_URL": "redis://:x@127.0.0.1:1/0"})
    assert res.returncode != 0
    for text in (str(bad), "game.hood_width", "less than or equal to 4096", "trainer.learning_rate"):
        assert text in res.stderr, res.stderr
