"""Minimap-aware augmentation: the minimap never changes, a flip mirrors the rest and the labels."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.games.sim.minimap import minimap_rect
from pipeline.train.augment import (
    Augmenter,
    AugmentParams,
    AugmentSettings,
    box_to_rect,
    sim_minimap_box,
)

W, H = 64, 48


def row(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "frames": rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8),
        "speed": np.float32(7.0),
        "purpose": np.array([120.0, 0.4], np.float32),
        "controls": np.array([0.5, -0.3], np.float32),
        "targets": np.array([0.8, 0.6], np.float32),
        "history": rng.uniform(-1, 1, (4, 5)).astype(np.float32),
        "game_time": np.float64(1.0),
    }


@pytest.mark.parametrize("size", [(64, 48), (160, 120), (224, 168), (33, 25)])
def test_the_box_covers_the_sims_minimap_exactly(size: tuple[int, int]) -> None:
    assert box_to_rect(sim_minimap_box(*size), *size) == minimap_rect(*size)


@pytest.mark.parametrize("params", [
    AugmentParams(flip=True),
    AugmentParams(flip=True, dx=3, dy=-2, brightness=0.1, contrast=1.2, saturation=0.8),
    AugmentParams(dx=-4, dy=2),
    AugmentParams(brightness=-0.1, contrast=0.8),
])
def test_minimap_pixels_stay_identical(params: AugmentParams) -> None:
    box = sim_minimap_box(W, H)
    x, y, w, h = box_to_rect(box, W, H)
    original = row()
    out = Augmenter()(original, box, np.random.default_rng(0), params)
    assert np.array_equal(out["frames"][:, y:y + h, x:x + w], original["frames"][:, y:y + h, x:x + w])
    outside = np.ones((H, W), bool)
    outside[y:y + h, x:x + w] = False
    assert not np.array_equal(out["frames"][:, outside], original["frames"][:, outside])


def test_flip_mirrors_the_frame_and_negates_steering_and_direction() -> None:
    box = sim_minimap_box(W, H)
    original = row(1)
    out = Augmenter()(original, box, np.random.default_rng(0), AugmentParams(flip=True))
    # the top rows are far from the minimap: a plain mirror image there
    assert np.array_equal(out["frames"][:, :10], original["frames"][:, :10, ::-1])
    assert out["targets"].tolist() == pytest.approx([0.8, -0.6])
    assert out["controls"].tolist() == pytest.approx([0.5, 0.3])
    assert out["purpose"].tolist() == pytest.approx([120.0, -0.4])
    assert np.allclose(out["history"][:, [1, 4]], -original["history"][:, [1, 4]])
    assert np.allclose(out["history"][:, [0, 2, 3]], original["history"][:, [0, 2, 3]])
    assert original["targets"][1] == pytest.approx(0.6)  # the input row is not modified


def test_random_draws_keep_the_minimap_and_flip_steering_only_when_flipped() -> None:
    box = sim_minimap_box(W, H)
    x, y, w, h = box_to_rect(box, W, H)
    aug, rng = Augmenter(AugmentSettings(flip_p=0.5)), np.random.default_rng(5)
    signs = set()
    for i in range(20):
        original = row(i)
        out = aug(original, box, rng)
        assert np.array_equal(out["frames"][:, y:y + h, x:x + w], original["frames"][:, y:y + h, x:x + w])
        signs.add(float(np.sign(out["targets"][1])))
    assert signs == {1.0, -1.0}


def test_random_shift_moves_every_frame_of_a_sample_by_one_offset_within_pad() -> None:
    import torch

    from pipeline.train.augment import random_shift

    b, f, h, w = 64, 2, 12, 16
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = (ys * w + xs).to(torch.uint8)  # every pixel tells its own position (h*w < 256)
    frames = base[None, None, :, :, None].expand(b, f, h, w, 3).clone()
    frames[:, 1] = 255 - frames[:, 1]  # the second frame differs, so the same offset is checked on both
    out = random_shift(frames, 3, torch.Generator().manual_seed(0))
    assert out.shape == frames.shape and out.dtype == torch.uint8
    offsets = set()
    for i in range(b):
        centre = int(out[i, 0, h // 2, w // 2, 0])
        dy, dx = centre // w - h // 2, centre % w - w // 2
        assert -3 <= dy <= 3 and -3 <= dx <= 3
        rows = (torch.arange(h) + dy).clamp(0, h - 1)
        cols = (torch.arange(w) + dx).clamp(0, w - 1)
        expected = frames[i][:, rows][:, :, cols]
        assert torch.equal(out[i], expected)  # both frames, all channels, edges repeated
        offsets.add((dy, dx))
    assert len(offsets) > 20  # offsets drawn per sample, not one for the batch
    assert random_shift(frames, 0) is frames


def test_the_learner_trains_on_shifted_frames_only_when_asked() -> None:
    import torch

    from pipeline.models import build_model
    from pipeline.train.learner import Learner
    from tests.factories import tiny_config

    cfg = tiny_config(model={"width": 8, "dense": 16, "head": [8]})
    size = (cfg.game.hood_height, cfg.game.hood_width)
    seen: list[torch.Tensor] = []
    for shift in (0, 4):
        model = build_model(cfg.model, cfg.inputs, cfg.outputs, size)
        model.register_forward_pre_hook(lambda _m, args: seen.append(args[0]["frames"].clone()))
        learner = Learner(model, 1e-3, device="cpu", augment_shift_px=shift)
        frames = torch.randint(0, 256, (8, 1, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        batch = {"frames": frames, "speed": torch.zeros(8), "purpose": torch.zeros(8, 2),
                 "controls": torch.zeros(8, 2), "targets": torch.zeros(8, 2)}
        learner.step_tensors(batch)
        assert torch.equal(seen[-1], frames) == (shift == 0)

