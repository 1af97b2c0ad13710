"""Convcam: grid choice, exact placement of every channel, normalisation, dual colours."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.models import convcam


@pytest.mark.parametrize(
    ("c", "h", "w", "aspect", "pad", "expected"),
    [
        (1, 7, 11, 16 / 9, 1, (1, 1)),
        (12, 4, 4, 16 / 9, 1, (3, 5)),  # round(sqrt(12 * 16/9)) = round(4.62) = 5
        (16, 4, 4, 1.0, 0, (4, 4)),
        (1536, 7, 11, 16 / 9, 1, (36, 43)),  # the reboot's Xception: 1536 maps of 11 x 7
        (3, 10, 2, 100.0, 1, (1, 3)),  # never more columns than channels
    ],
)
def test_grid_shape(c: int, h: int, w: int, aspect: float, pad: int, expected: tuple[int, int]) -> None:
    rows, cols = convcam.grid_shape(c, h, w, aspect, pad)
    assert (rows, cols) == expected
    assert rows * cols >= c > (rows - 1) * cols  # no empty row


def test_grid_is_close_to_the_aspect() -> None:
    rows, cols = convcam.grid_shape(1536, 7, 11, 16 / 9, 1)
    height, width = convcam.tiled_size(7, 11, rows, cols, 1)
    assert (height, width) == (36 * 7 + 35, 43 * 11 + 42)
    assert abs(width / height - 16 / 9) < 0.1


def test_every_channel_lands_in_its_cell_exactly() -> None:
    c, h, w, pad = 7, 3, 4, 2
    maps = np.zeros((c, h, w), dtype=np.float32)
    for k in range(c):
        maps[k] = k * 100 + np.arange(h)[:, None] * 10 + np.arange(w)[None, :]
    img = convcam.tile(maps, cols=3, pad=pad)
    rows = math.ceil(c / 3)
    assert img.dtype == np.uint8
    assert img.shape == (rows * h + (rows - 1) * pad, 3 * w + 2 * pad)
    top = maps.max()
    expected_cells = np.zeros(img.shape, dtype=bool)
    for k in range(c):
        y, x = (k // 3) * (h + pad), (k % 3) * (w + pad)
        np.testing.assert_array_equal(img[y:y + h, x:x + w], np.rint(maps[k] / top * 255).astype(np.uint8))
        expected_cells[y:y + h, x:x + w] = True
    assert not img[~expected_cells].any()  # padding and the two unused cells stay black


def test_normalise_global_and_per_channel() -> None:
    maps = np.stack([np.full((2, 2), 1.0), np.array([[0.0, 2.0], [4.0, 8.0]]), np.full((2, 2), 3.0)])
    glob = convcam.tile(maps, cols=3, pad=0)
    assert glob.min() == 0 and glob.max() == 255
    assert glob[0, 0] == round(1 / 8 * 255)
    per = convcam.tile(maps, cols=3, pad=0, mode="channel")
    assert not per[:, 0:2].any() and not per[:, 4:6].any()  # flat channels -> 0
    np.testing.assert_array_equal(per[:, 2:4], np.rint(np.array([[0, 2], [4, 8]]) / 8 * 255))


def test_flat_and_non_finite_inputs_do_not_break() -> None:
    assert not convcam.tile(np.ones((4, 3, 3))).any()
    bad = np.ones((2, 2, 2), dtype=np.float32)
    bad[0, 0, 0], bad[1, 1, 1] = np.nan, np.inf
    img = convcam.tile(bad, cols=2, pad=0)
    assert img.shape == (2, 4)
    with pytest.raises(ValueError, match=r"\[C, h, w\]"):
        convcam.tile(np.ones((3, 3)))
    with pytest.raises(ValueError, match="channel"):
        convcam.grid_shape(0, 3, 3)


def test_dual_overlays_two_colours_when_shapes_match() -> None:
    a = np.zeros((2, 2, 2), dtype=np.float32)
    b = np.zeros((2, 2, 2), dtype=np.float32)
    a[0, 0, 0] = 1.0  # only the first backbone fires here
    b[0, 1, 1] = 1.0  # only the second here
    a[1, 0, 0] = b[1, 0, 0] = 1.0  # both
    rgb = convcam.dual(a, b, pad=1, aspect=2.0)
    first, second = convcam.DUAL_COLOURS
    assert rgb.shape == (2, 5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == first
    assert tuple(rgb[1, 1]) == second
    assert tuple(rgb[0, 3]) == tuple(min(255, x + y) for x, y in zip(first, second, strict=True))


def test_dual_side_by_side_when_shapes_differ() -> None:
    rgb = convcam.dual(np.random.rand(4, 3, 3), np.random.rand(2, 5, 5), pad=1)
    a = convcam.tile(np.random.rand(4, 3, 3), pad=1, aspect=16 / 18)
    b = convcam.tile(np.random.rand(2, 5, 5), pad=1, aspect=16 / 18)
    assert rgb.shape == (max(a.shape[0], b.shape[0]), a.shape[1] + 2 + b.shape[1], 3)


def test_render_takes_model_features() -> None:
    feats = torch.rand(3, 8, 2, 3)
    feats[1] = 0  # another sample in the batch must not matter
    img = convcam.render(feats)
    assert img is not None and img.ndim == 2
    np.testing.assert_array_equal(img, convcam.tile(feats[0].numpy()))
    dual = convcam.render((torch.rand(1, 8, 2, 3), torch.rand(1, 8, 2, 3)))
    assert dual is not None and dual.ndim == 3 and dual.shape[2] == 3
    assert convcam.render(None) is None


def test_upscale_is_nearest_and_integer() -> None:
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    big = convcam.upscale(img, 10)
    assert big.shape == (8, 12)
    np.testing.assert_array_equal(big[::4, ::4], img)
    assert convcam.upscale(img, 2) is img
