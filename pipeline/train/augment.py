"""Augmentation. Offline (seed 004), minimap-aware: inpaint the minimap, augment, paste it back.
Live, on the training device: `random_shift` of every drawn batch.

The minimap tells the car where to go and always sits in the same corner. Flipping or
shifting the whole frame would move a mirrored minimap to the other corner and teach the
model that the route can be read there, so the minimap is cut out first (its area
inpainted from the surroundings), the frame is flipped/shifted/recoloured, and the
original minimap pixels are pasted back unchanged. A flip mirrors the world, so it also
negates steering (targets, controls, history) and the Purpose direction.

Minimap positions are stored as a *box*: [x, y, w, h] as fractions of the frame size, so
one box fits every resolution a recording is resized to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import CONTROL_NAMES, GameConfig

if TYPE_CHECKING:  # torch only where a batch is shifted: the recorders import this module too
    import torch

STEER = CONTROL_NAMES.index("steering")
#: history columns that change sign in a mirrored world (see schema.HISTORY_FEATURES)
_HISTORY_STEER, _HISTORY_DIRECTION = 1, 4
#: GTA5's minimap (radar) at the default HUD, generous so every aspect ratio is covered.
GTA5_MINIMAP_BOX: tuple[float, float, float, float] = (0.0, 0.74, 0.23, 0.26)


def sim_minimap_box(width: int, height: int) -> list[float]:
    """The simulator's minimap as a box (from `pipeline.games.sim.minimap_rect`)."""
    from pipeline.games.sim.minimap import minimap_rect

    x, y, w, h = minimap_rect(width, height)
    return [x / width, y / height, w / width, h / height]


def minimap_box_for(game: GameConfig) -> list[float] | None:
    """Where a backend draws the minimap in hood frames, or None when it has none/unknown."""
    if game.backend == "sim":
        return sim_minimap_box(game.hood_width, game.hood_height) if game.options.get("minimap", True) else None
    if game.backend == "gta5":
        return list(GTA5_MINIMAP_BOX)
    return None


def box_to_rect(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel rect (x, y, w, h) covering a box at this frame size (rounded outwards, clipped)."""
    fx, fy, fw, fh = (float(v) for v in box)
    x0, y0 = max(0, math.floor(fx * width + 1e-6)), max(0, math.floor(fy * height + 1e-6))
    x1 = min(width, math.ceil((fx + fw) * width - 1e-6))
    y1 = min(height, math.ceil((fy + fh) * height - 1e-6))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and strengths; colour values are the +- range of a uniform draw."""

    flip_p: float = 0.5
    shift_p: float = 0.5
    shift_frac: float = 0.05
    colour_p: float = 0.8
    brightness: float = 0.15
    contrast: float = 0.2
    saturation: float = 0.25


@dataclass(frozen=True)
class AugmentParams:
    """One draw, applied identically to every frame of a sample (a sequence stays coherent)."""

    flip: bool = False
    dx: int = 0
    dy: int = 0
    brightness: float = 0.0
    contrast: float = 1.0
    saturation: float = 1.0

    @property
    def geometric(self) -> bool:
        return self.flip or self.dx != 0 or self.dy != 0

    @property
    def colour(self) -> bool:
        return self.brightness != 0.0 or self.contrast != 1.0 or self.saturation != 1.0


def draw_params(settings: AugmentSettings, rng: np.random.Generator, width: int, height: int) -> AugmentParams:
    s = settings
    flip = bool(rng.random() < s.flip_p)
    dx = dy = 0
    if rng.random() < s.shift_p:
        dx = int(rng.integers(-round(width * s.shift_frac), round(width * s.shift_frac) + 1))
        dy = int(rng.integers(-round(height * s.shift_frac), round(height * s.shift_frac) + 1))
    b, c, sat = 0.0, 1.0, 1.0
    if rng.random() < s.colour_p:
        b = float(rng.uniform(-s.brightness, s.brightness))
        c = float(rng.uniform(1 - s.contrast, 1 + s.contrast))
        sat = float(rng.uniform(1 - s.saturation, 1 + s.saturation))
    return AugmentParams(flip, dx, dy, b, c, sat)


def _colour(img: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Saturation (blend with grey), then contrast around mid-grey and brightness as one LUT."""
    import cv2

    out = np.ascontiguousarray(img)
    if p.saturation != 1.0:
        grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        out = cv2.addWeighted(out, p.saturation, cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), 1.0 - p.saturation, 0.0)
    if p.contrast != 1.0 or p.brightness != 0.0:
        levels = np.arange(256, dtype=np.float32)
        lut = np.clip((levels - 128.0) * p.contrast + 128.0 + p.brightness * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, lut)
    return out


def inpaint_rect(img: np.ndarray, rect: tuple[int, int, int, int], radius: int = 3) -> np.ndarray:
    """A copy of `img` with `rect` filled from its surroundings (Telea inpainting).

    Only a crop around the hole is inpainted, at half resolution (4x fewer hole pixels,
    about 4x faster); the fill is a blurred guess anyway and the original pixels return.
    """
    import cv2

    x, y, w, h = rect
    height, width = img.shape[:2]
    m = radius + 2
    x0, y0, x1, y1 = max(0, x - m), max(0, y - m), min(width, x + w + m), min(height, y + h + m)
    crop = np.ascontiguousarray(img[y0:y1, x0:x1])
    ch, cw = crop.shape[:2]
    mask = np.zeros((ch, cw), np.uint8)
    mask[y - y0:y - y0 + h, x - x0:x - x0 + w] = 255
    sw, sh = max(1, cw // 2), max(1, ch // 2)
    small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
    small_mask = (cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
    filled = cv2.resize(cv2.inpaint(small, small_mask, radius, cv2.INPAINT_TELEA), (cw, ch),
                        interpolation=cv2.INTER_LINEAR)
    out = np.array(img, dtype=np.uint8, copy=True)
    out[y:y + h, x:x + w] = filled[y - y0:y - y0 + h, x - x0:x - x0 + w]
    return out


def augment_frame(frame: np.ndarray, rect: tuple[int, int, int, int] | None, p: AugmentParams) -> np.ndarray:
    """One RGB uint8 frame: inpaint the minimap, flip/shift/recolour, paste the minimap back."""
    import cv2

    if not (p.geometric or p.colour):
        return frame
    out = np.ascontiguousarray(frame)
    has_map = rect is not None and rect[2] > 0 and rect[3] > 0
    if has_map:
        x, y, w, h = rect  # type: ignore[misc]
        minimap = frame[y:y + h, x:x + w].copy()
        if p.geometric:
            out = inpaint_rect(out, (x, y, w, h))
    if p.flip:
        out = out[:, ::-1]
    if p.dx or p.dy:
        height, width = out.shape[:2]
        m = np.float32([[1, 0, p.dx], [0, 1, p.dy]])
        out = cv2.warpAffine(np.ascontiguousarray(out), m, (width, height), borderMode=cv2.BORDER_REPLICATE)
    if p.colour:
        out = _colour(out, p)
    out = np.array(out, dtype=np.uint8, copy=True)
    if has_map:
        out[y:y + h, x:x + w] = minimap
    return out


def flip_labels(row: dict[str, Any]) -> dict[str, Any]:
    """A mirrored world: steering and the Purpose direction change sign everywhere in a row."""
    out = dict(row)
    for name in ("targets", "controls"):
        v = np.array(row[name], dtype=np.float32, copy=True)
        v[..., STEER] = -v[..., STEER]
        out[name] = v
    purpose = np.array(row["purpose"], dtype=np.float32, copy=True)
    purpose[..., 1] = -purpose[..., 1]
    out["purpose"] = purpose
    history = np.array(row["history"], dtype=np.float32, copy=True)
    if history.size:
        history[..., _HISTORY_STEER] = -history[..., _HISTORY_STEER]
        history[..., _HISTORY_DIRECTION] = -history[..., _HISTORY_DIRECTION]
    out["history"] = history
    return out


class Augmenter:
    """Augments one sample row (frames [F,H,W,3] + vectors) with one random draw."""

    def __init__(self, settings: AugmentSettings | None = None) -> None:
        self.settings = settings or AugmentSettings()

    def __call__(self, row: dict[str, Any], box: Sequence[float] | None, rng: np.random.Generator,
                 params: AugmentParams | None = None) -> dict[str, Any]:
        frames = row["frames"]
        height, width = frames.shape[1:3]
        p = params or draw_params(self.settings, rng, width, height)
        rect = box_to_rect(box, width, height) if box is not None else None
        out = flip_labels(row) if p.flip else dict(row)
        out["frames"] = np.stack([augment_frame(f, rect, p) for f in frames])
        return out


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each sample's frames [B, F, H, W, C] moved by one random whole-pixel offset in
    [-pad, pad] on both axes, edge pixels repeated (DrQ, Kostrikov et al. 2020), on the
    frames' own device. With `samples_per_insert` > 1 a sample is drawn several times; a shift
    makes those draws differ instead of repeating one image. Labels are unchanged: a few pixels
    move the whole view (and a minimap drawn in it) a little, they do not mirror the world."""
    import torch

    if pad <= 0:
        return frames
    b, f, h, w, _ = frames.shape
    dev = frames.device
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=generator.device if generator
                            else dev).to(dev) - pad)
    rows = (torch.arange(h, device=dev) + dy[:, None]).clamp_(0, h - 1)  # [B, H]
    cols = (torch.arange(w, device=dev) + dx[:, None]).clamp_(0, w - 1)  # [B, W]
    bi = torch.arange(b, device=dev)[:, None, None, None]
    fi = torch.arange(f, device=dev)[None, :, None, None]
    return frames[bi, fi, rows[:, None, :, None], cols[:, None, None, :]]
