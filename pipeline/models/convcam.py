"""The Convcam: the backbone's last feature maps, every channel tiled into one image.

Watching these maps change is how the stream showed the CNN learning. A layer with C
channels of h x w maps becomes a grid of `rows x cols` cells separated by `pad` pixels:

    cols = clamp(round(sqrt(C * aspect * (h + pad) / (w + pad))), 1, C)
    rows = ceil(C / cols)
    H    = rows * h + (rows - 1) * pad        W = cols * w + (cols - 1) * pad
    channel k -> cell (k // cols, k % cols), its pixel (y, x) ->
                 (row * (h + pad) + y, col * (w + pad) + x)

so the image is close to `aspect` (width / height). Values are normalised over the whole
image (or per channel) into uint8; padding and unused cells stay 0. The dual-backbone
variant shows each backbone in its own colour. Pure numpy: torch tensors are converted
by duck typing, so this module never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Normalise = Literal["global", "channel"]
#: Colours (RGB) of the first and second backbone in the dual-backbone Convcam.
DUAL_COLOURS: tuple[tuple[int, int, int], tuple[int, int, int]] = ((255, 140, 0), (0, 170, 255))


def to_numpy(features: Any) -> np.ndarray:
    """A float32 numpy copy of an array or a torch tensor (on any device, any dtype)."""
    if hasattr(features, "detach"):
        features = features.detach().float().cpu().numpy()
    return np.asarray(features, dtype=np.float32)


def grid_shape(channels: int, height: int, width: int, aspect: float = 16 / 9, pad: int = 1) -> tuple[int, int]:
    """(rows, cols) whose tiled image is closest to `aspect` = width / height."""
    if channels < 1 or height < 1 or width < 1:
        raise ValueError(f"need at least one channel of at least 1x1, got C={channels} h={height} w={width}")
    if aspect <= 0 or pad < 0:
        raise ValueError(f"aspect must be > 0 and pad >= 0, got aspect={aspect} pad={pad}")
    cols = round(math.sqrt(channels * aspect * (height + pad) / (width + pad)))
    cols = min(channels, max(1, cols))
    return math.ceil(channels / cols), cols


def tiled_size(height: int, width: int, rows: int, cols: int, pad: int = 1) -> tuple[int, int]:
    """(H, W) of `rows x cols` cells of h x w with `pad` pixels between them."""
    return rows * height + (rows - 1) * pad, cols * width + (cols - 1) * pad


def normalise(values: np.ndarray, mode: Normalise = "global") -> np.ndarray:
    """Min-max into [0, 1] over everything (`global`) or per channel (axis 0); flat -> 0."""
    values = np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "global":
        lo, hi = float(values.min()), float(values.max())
        return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if mode != "channel":
        raise ValueError(f"normalise mode must be 'global' or 'channel', got {mode!r}")
    axes = tuple(range(1, values.ndim))
    lo = values.min(axis=axes, keepdims=True)
    span = values.max(axis=axes, keepdims=True) - lo
    return np.where(span > 0, (values - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def tile(maps: np.ndarray, cols: int | None = None, pad: int = 1, aspect: float = 16 / 9,
         mode: Normalise = "global") -> np.ndarray:
    """[C, h, w] feature maps -> one uint8 grayscale image [H, W] (see the module docstring)."""
    maps = to_numpy(maps)
    if maps.ndim != 3:
        raise ValueError(f"expected feature maps [C, h, w], got shape {maps.shape}")
    c, h, w = maps.shape
    if cols is None:
        rows, cols = grid_shape(c, h, w, aspect, pad)
    else:
        cols = min(c, max(1, cols))
        rows = math.ceil(c / cols)
    unit = np.rint(normalise(maps, mode) * 255.0).astype(np.uint8)
    height, width = tiled_size(h, w, rows, cols, pad)
    out = np.zeros((height, width), dtype=np.uint8)
    for k in range(c):
        y, x = (k // cols) * (h + pad), (k % cols) * (w + pad)
        out[y:y + h, x:x + w] = unit[k]
    return out


def colourise(gray: np.ndarray, colour: Sequence[int]) -> np.ndarray:
    """Grayscale [H, W] -> RGB [H, W, 3] shaded from black to `colour`."""
    scale = np.asarray(colour, dtype=np.float32) / 255.0
    return np.rint(gray[..., None].astype(np.float32) * scale).astype(np.uint8)


def dual(first: np.ndarray, second: np.ndarray, pad: int = 1, aspect: float = 16 / 9,
         mode: Normalise = "global",
         colours: tuple[Sequence[int], Sequence[int]] = DUAL_COLOURS) -> np.ndarray:
    """Two backbones' maps in two colours: overlaid when their shapes match, else side by side.

    Overlaid, a cell where both backbones fire shows the sum of both colours (near white),
    so agreement and disagreement between the twins are visible at a glance.
    """
    same = np.shape(first) == np.shape(second)
    each = aspect if same else aspect / 2
    a = colourise(tile(first, pad=pad, aspect=each, mode=mode), colours[0])
    b = colourise(tile(second, pad=pad, aspect=each, mode=mode), colours[1])
    if same:
        return np.clip(a.astype(np.uint16) + b, 0, 255).astype(np.uint8)
    return side_by_side([a, b], gap=max(2 * pad, 2))


def side_by_side(images: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Images of the same kind (all [H, W] or all [H, W, 3]) left to right, top-aligned."""
    height = max(img.shape[0] for img in images)
    width = sum(img.shape[1] for img in images) + gap * (len(images) - 1)
    out = np.zeros((height, width, *images[0].shape[2:]), dtype=np.uint8)
    x = 0
    for img in images:
        out[: img.shape[0], x:x + img.shape[1]] = img
        x += img.shape[1] + gap
    return out


def render(features: Any, index: int = 0, pad: int = 1, aspect: float = 16 / 9,
           mode: Normalise = "global") -> np.ndarray | None:
    """`DrivingModel.last_features` -> the Convcam of sample `index`, or None without features.

    One tensor [B, C, h, w] (or [C, h, w]) gives grayscale [H, W]; a list/tuple of two
    (dual backbone) gives RGB [H, W, 3]; more than two are shown side by side in gray.
    """
    if features is None:
        return None
    parts = list(features) if isinstance(features, list | tuple) else [features]
    if not parts:
        return None
    arrays = [_sample(to_numpy(p), index) for p in parts]
    if len(arrays) == 1:
        return tile(arrays[0], pad=pad, aspect=aspect, mode=mode)
    if len(arrays) == 2:
        return dual(arrays[0], arrays[1], pad=pad, aspect=aspect, mode=mode)
    each = aspect / len(arrays)
    return side_by_side([tile(a, pad=pad, aspect=each, mode=mode) for a in arrays], gap=max(2 * pad, 2))


def upscale(image: np.ndarray, min_width: int) -> np.ndarray:
    """Nearest-neighbour integer upscale so small maps stay crisp (TensorBoard, JPEG)."""
    factor = max(1, math.ceil(min_width / max(1, image.shape[1])))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _sample(array: np.ndarray, index: int) -> np.ndarray:
    if array.ndim == 4:
        return array[min(index, array.shape[0] - 1)]
    if array.ndim == 3:
        return array
    raise ValueError(f"feature maps must be [B, C, h, w] or [C, h, w], got shape {array.shape}")
