"""Frame codecs: how a row's hood frames travel, sit in the buffers and lie in recordings.

`raw` is the uint8 array as it is (the frames are mapped straight out of Redis' bytes);
`png` and `zstd` are lossless; `jpeg` is lossy at `[buffers] frame_quality`. A row's F
frames `[F, H, W, 3]` are coded together, once, by the collector: as one image of F*H
rows (png, jpeg) or one zstd frame. The trainer decodes them in its draw thread, so the
training step never waits on them. Chosen by measurement: `charles bench codec`.

Decoding is for untrusted bytes: the encoded length must be within `max_encoded_bytes`
of the expected shape, the image's own header (PNG IHDR, JPEG SOF, zstd frame content
size) must declare exactly that shape before anything is allocated, and the decoded
array is checked once more. A forged frame raises `CodecError`; nothing is pickled.
"""

from __future__ import annotations

import math
import struct
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import CodecError

RAW, PNG, ZSTD, JPEG = "raw", "png", "zstd", "jpeg"
CODECS: tuple[str, ...] = (RAW, PNG, ZSTD, JPEG)
LOSSLESS: frozenset[str] = frozenset({RAW, PNG, ZSTD})
#: PNG's zlib level: 1 is OpenCV's default and the fastest. On 480x270 simulator frames
#: level 3 is 8% smaller for 1.4x the encode time, 6 is 19% smaller for 3.1x, 9 is 23% for
#: 27x (`charles bench codec`, docs/benchmarks.md).
PNG_LEVEL = 1
#: zstd's level: 1 is the fastest; 3 (zstd's default) is 7% smaller for 1.2x the encode
#: time on 480x270 simulator frames, 9 is 16% smaller for 5x.
ZSTD_LEVEL = 1
#: the first bytes of coded frames that declare their size (PNG's IHDR, zstd's frame header,
#: JPEG's tables and SOF as `encode` writes them): a row's head carries them, so the server
#: checks them without reading the frames, and the trainer checks them before decoding
FRAMES_PEEK = 1024
#: the largest zstd window a frame may ask for (a frame of a 4096x4096 hood is 48 MB)
_ZSTD_MAX_WINDOW = 1 << 27
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): not DHT/JPG/DAC
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def raw_bytes(shape: tuple[int, ...] | list[int]) -> int:
    """Bytes of uint8 frames of this shape, uncoded."""
    return math.prod(shape)


def max_encoded_bytes(codec: str, shape: tuple[int, ...] | list[int]) -> int:
    """The most a coded row's frames of this shape may take: exactly the raw size for `raw`;
    for the others the raw size plus what the format adds to incompressible data (PNG's
    filter byte per line, zlib's and zstd's block headers, JPEG's tables), generously."""
    raw = raw_bytes(shape)
    return raw if codec == RAW else raw + raw // 16 + 4096


def _image_shape(shape: tuple[int, ...] | list[int]) -> tuple[int, int]:
    """(lines, width) of the one image a row's frames [F, H, W, 3] are coded as."""
    if len(shape) != 4 or shape[-1] != 3:
        raise CodecError(f"frames must be [F, H, W, 3], got {list(shape)}")
    return shape[0] * shape[1], shape[2]


@dataclass(frozen=True)
class FrameCodec:
    """One codec with its settings, as the collector encodes; `decode` needs only the name."""

    name: str = RAW
    quality: int = 90

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise CodecError(f"frame codec {self.name!r} is unknown; use one of {list(CODECS)}")
        if not 1 <= self.quality <= 100:
            raise CodecError(f"frame quality {self.quality} is outside 1..100")

    @property
    def lossless(self) -> bool:
        return self.name in LOSSLESS

    def encode(self, frames: np.ndarray) -> bytes | memoryview:
        """Frames [F, H, W, 3] uint8 (RGB) as this codec's bytes (a view of them for `raw`)."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if self.name == RAW:
            return memoryview(frames).cast("B")
        if self.name == ZSTD:
            return _zstd_compressor().compress(frames)
        import cv2

        lines, width = _image_shape(frames.shape)
        image = frames.reshape(lines, width, 3)
        if self.name == PNG:  # lossless: the channels go through as they are, no conversion
            ok, out = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
        else:  # JPEG's colour transform assumes BGR: convert, so the chroma loss falls where it should
            ok, out = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise CodecError(f"OpenCV could not encode frames of shape {list(frames.shape)} as {self.name}")
        return out.tobytes()


def check(data: bytes | memoryview, codec: str, shape: tuple[int, ...] | list[int]) -> None:
    """Refuse coded frames whose length or declared size is not `shape`'s, without decoding."""
    check_head(b"" if codec == RAW else bytes(data[:FRAMES_PEEK]), len(data), codec, shape)


def check_head(head: bytes, n: int, codec: str, shape: tuple[int, ...] | list[int]) -> None:
    """`check` from the frames' first `FRAMES_PEEK` bytes (`head`) and their length `n`."""
    if codec not in CODECS:
        raise CodecError(f"frame codec {codec!r} is unknown; this version knows {list(CODECS)}")
    bound = max_encoded_bytes(codec, shape)
    if codec == RAW:
        if n != bound:
            raise CodecError(f"raw frames hold {n} bytes, shape {list(shape)} needs {bound}")
        return
    if not 0 < n <= bound:
        raise CodecError(f"{codec} frames of {n} bytes: shape {list(shape)} allows 1..{bound}")
    if codec == ZSTD:
        declared = _zstd_content_size(head)
        if declared != raw_bytes(shape):
            raise CodecError(f"zstd frames declare {declared} bytes, shape {list(shape)} needs {raw_bytes(shape)}")
        return
    lines, width = _image_shape(shape)
    got = _png_size(head) if codec == PNG else _jpeg_size(head)
    if got != (lines, width):
        raise CodecError(f"{codec} frames declare an image of {got[1]}x{got[0]}, shape {list(shape)} "
                         f"needs {width}x{lines}")


def decode(data: bytes | memoryview, codec: str, shape: tuple[int, ...] | list[int],
           out: np.ndarray | None = None) -> np.ndarray:
    """Coded frames back into uint8 [F, H, W, 3] of exactly `shape` (into `out` when given;
    `raw` without `out` is a read-only view of `data`); raise `CodecError` for anything else."""
    check(data, codec, shape)
    shape = tuple(shape)
    if codec == RAW:
        frames = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    elif codec == ZSTD:
        import zstandard

        try:
            plain = _zstd_decompressor().decompress(data, max_output_size=raw_bytes(shape),
                                                    allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise CodecError(f"zstd frames do not decode: {exc}") from None
        if len(plain) != raw_bytes(shape):
            raise CodecError(f"zstd frames decoded to {len(plain)} bytes, shape {list(shape)} needs {raw_bytes(shape)}")
        frames = np.frombuffer(plain, dtype=np.uint8).reshape(shape)
    else:
        import cv2

        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        lines, width = _image_shape(shape)
        if image is None or image.shape != (lines, width, 3) or image.dtype != np.uint8:
            got = "nothing" if image is None else f"{list(image.shape)} {image.dtype}"
            raise CodecError(f"{codec} frames decoded to {got}, shape {list(shape)} needs [{lines}, {width}, 3] uint8")
        if codec == JPEG:
            target = out.reshape(lines, width, 3) if out is not None else None
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=target)
            if out is not None:
                return out
        frames = image.reshape(shape)
    if out is None:
        return frames
    out[...] = frames
    return out


# -- headers, read without decoding ------------------------------------------------------------

def _png_size(head: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR; only 8-bit RGB is accepted (what `encode` writes)."""
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise CodecError("png frames without a PNG signature and header")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if depth != 8 or colour != 2:
        raise CodecError(f"png frames of bit depth {depth} and colour type {colour}; only 8-bit RGB (2) is accepted")
    return height, width


def _jpeg_size(head: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's first start-of-frame; only 8-bit, 3-component images."""
    if head[:2] != b"\xff\xd8":
        raise CodecError("jpeg frames without a JPEG start of image")
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            raise CodecError("jpeg frames with a broken marker before the frame header")
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 10 > len(head):
                break
            precision, height, width, components = struct.unpack(">BHHB", head[i + 4 : i + 10])
            if precision != 8 or components != 3:
                raise CodecError(f"jpeg frames of {precision}-bit precision and {components} components; "
                                 "only 8-bit, 3-component images are accepted")
            return height, width
        if marker in (0xD9, 0xDA) or length < 2:  # end of image, or scan data, before any frame header
            break
        i += 2 + length
    raise CodecError(f"jpeg frames without a frame header in their first {FRAMES_PEEK} bytes")


def _zstd_content_size(head: bytes) -> int:
    import zstandard

    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd frames without a valid frame header: {exc}") from None
    if size < 0:
        raise CodecError("zstd frames that do not declare their size")
    return int(size)


_local = threading.local()  # zstd (de)compressor objects are not safe to share between threads


def _zstd_compressor() -> Any:
    import zstandard

    if getattr(_local, "compressor", None) is None:
        _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return _local.compressor


def _zstd_decompressor() -> Any:
    import zstandard

    if getattr(_local, "decompressor", None) is None:
        _local.decompressor = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    return _local.decompressor


#: frames as they are: every row before codecs existed, and the default
RAW_CODEC = FrameCodec(RAW)
