"""The codec round-trips numeric arrays and refuses everything that could reach pickle."""

from __future__ import annotations

import pickle

import msgpack
import msgpack_numpy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import CodecError
from pipeline.wire import codec


def test_round_trip_arrays_and_scalars() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (2, 120, 160, 3), dtype=np.uint8)
    msg = {"frames": frame, "speed": np.float32(3.5), "n": 4, "name": "x", "nested": {"a": [1.5, None]}}
    out = codec.decode(codec.encode(msg))
    np.testing.assert_array_equal(out["frames"], frame)
    assert out["frames"].dtype == np.uint8
    assert out["speed"] == 3.5 and out["n"] == 4 and out["name"] == "x" and out["nested"] == {"a": [1.5, None]}


def test_reads_msgpack_numpy_layout() -> None:
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    out = codec.decode(msgpack.packb({"a": arr}, default=msgpack_numpy.encode))
    np.testing.assert_array_equal(out["a"], arr)


def test_object_arrays_never_reach_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    evil = msgpack.packb({"a": np.array([1, "x"], dtype=object)}, default=msgpack_numpy.encode)
    with pytest.raises(CodecError, match="not allowed"):
        codec.decode(evil)
    assert calls == []
    with pytest.raises(CodecError):
        codec.encode({"a": np.array([1, "x"], dtype=object)})


@pytest.mark.parametrize(
    "payload, reason",
    [
        (codec.encode({"a": np.zeros(10, np.float32)})[:-3], "not a valid message"),
        (msgpack.packb({b"nd": True, b"type": "<f4", b"kind": b"", b"shape": [4], b"data": b"\0" * 3}), "needs 16 bytes"),
        (msgpack.packb({b"nd": True, b"type": "<c16", b"kind": b"", b"shape": [1], b"data": b"\0" * 16}), "not allowed"),
        (msgpack.packb({b"nd": True, b"type": "<f4", b"kind": b"", b"shape": [-1], b"data": b""}), "shape"),
        (msgpack.packb({b"nd": False, b"type": "<f4", b"data": b"\0" * 4}), "scalar"),
        (b"\xc1", "not a valid message"),
    ],
)
def test_rejects_bad_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        codec.decode(payload)


def test_oversized_rejected_before_decoding() -> None:
    data = codec.encode({"a": np.zeros(1000, np.uint8)})
    with pytest.raises(CodecError, match="exceeds the limit"):
        codec.decode(data, max_bytes=100)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_codec_errors(data: bytes) -> None:
    try:
        codec.decode(data)
    except CodecError:
        pass
