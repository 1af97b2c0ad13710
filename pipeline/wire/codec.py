"""The one codec for samples on the wire and in buffers: msgpack with numpy arrays.

Arrays use msgpack-numpy's layout (`{nd, type, kind, shape, data}`) so other tools can
read them, but decoding is our own: msgpack-numpy rebuilds object arrays by unpickling
them and has no switch to turn that off. Here only whitelisted numeric dtypes
are rebuilt (with `np.frombuffer`), sizes are checked against the declared shape, and
anything else raises `CodecError` before a single array is built from it.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from pipeline.errors import CodecError

#: dtypes that may cross the wire, as numpy `dtype.str` (explicit byte order).
ALLOWED_DTYPES: frozenset[str] = frozenset(
    {"|u1", "|i1", "|b1", "<u2", "<i2", "<u4", "<i4", "<i8", "<f2", "<f4", "<f8"}
)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_MAX_DIMS = 6


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        dtype = obj.dtype.str
        if dtype not in ALLOWED_DTYPES:
            raise CodecError(f"cannot encode array of dtype {obj.dtype} (allowed: {sorted(ALLOWED_DTYPES)})")
        return {
            b"nd": True,
            b"type": dtype,
            b"kind": b"",
            b"shape": list(obj.shape),
            b"data": np.ascontiguousarray(obj).tobytes(),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    raise CodecError(f"cannot encode value of type {type(obj).__name__}")


def encode(obj: Any) -> bytes:
    """Pack dicts/lists/scalars/strings and numeric numpy arrays into msgpack bytes."""
    try:
        return msgpack.packb(obj, default=_encode_default, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from None


def _decode_array(obj: dict[Any, Any]) -> Any:
    if obj.get(b"nd") is not True:
        if b"nd" in obj:
            raise CodecError("numpy scalar/object encodings are not accepted")
        return obj
    dtype_str = obj.get(b"type")
    if isinstance(dtype_str, bytes):
        dtype_str = dtype_str.decode("ascii", "replace")
    if not isinstance(dtype_str, str) or dtype_str not in ALLOWED_DTYPES:
        raise CodecError(f"array dtype {dtype_str!r} is not allowed (allowed: {sorted(ALLOWED_DTYPES)})")
    shape = obj.get(b"shape")
    data = obj.get(b"data")
    if (
        not isinstance(shape, list | tuple)
        or len(shape) > _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise CodecError(f"array shape {shape!r} is not a list of at most {_MAX_DIMS} sizes")
    if not isinstance(data, bytes):
        raise CodecError("array data is not a byte string")
    dtype = np.dtype(dtype_str)
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data):
        raise CodecError(f"array of shape {list(shape)} {dtype_str} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Unpack bytes made by `encode`; raise `CodecError` for anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(
            data,
            object_hook=_decode_array,
            raw=False,
            strict_map_key=False,
            use_list=True,
        )
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.UnpackException, RecursionError) as exc:
        raise CodecError(f"not a valid message: {type(exc).__name__}: {exc}") from None
