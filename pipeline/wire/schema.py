"""The sample schema: the fields of a sample, their dtypes and shapes, and the checks
every set passes under the active config.

A sample set is columnar: every field is one array whose first axis is the sample
index, one balancing round. Fields (n = samples, F = context frames, N = history length):
    frames     uint8   [n, F, H, W, 3]  hood frames, oldest first, the last is "now"
    speed      float32 [n]              metres per second
    purpose    float32 [n, 2]           distance (m) and direction (rad, + = left) to the target
    controls   float32 [n, 2]           controls in effect before this frame's action
    targets    float32 [n, 2]           the expert's controls (label-shifted), in [-1, 1]
    history    float32 [n, N, 5]        past HISTORY_FEATURES, oldest first, excluding "now"
    game_time  float64 [n]              seconds on the game clock
Control vectors follow `pipeline.config.CONTROL_NAMES`.

Every row also carries its provenance (not a model input): `captured_at`, the collector's
wall-clock time of the frame, and `policy_version`, the weights version that drove the car
then (0: the NPC or a human). The trainer reports the age and policy lag of what it trains on.

How a sample travels is the row format's (`rows.py`), how a set travels the manifest's
(`manifest.py`), and how drawn rows become a batch the stacking's (`stacking.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import CONTROL_NAMES, Config, InputsConfig
from pipeline.errors import SampleError
from pipeline.wire import frames as frames_mod
from pipeline.wire.rows import MAX_HEAD_BYTES

HISTORY_FEATURES: tuple[str, ...] = (
    "acceleration_braking",
    "steering",
    "speed",
    "purpose_distance",
    "purpose_direction",
)
FIELDS: tuple[str, ...] = ("frames", "speed", "purpose", "controls", "targets", "history", "game_time")
DTYPES = {
    "frames": np.uint8,
    "speed": np.float32,
    "purpose": np.float32,
    "controls": np.float32,
    "targets": np.float32,
    "history": np.float32,
    "game_time": np.float64,
}
#: Per-row metadata that is not a model input (see the module docstring).
PROVENANCE: tuple[str, ...] = ("captured_at", "policy_version")
MAX_SPEED_MPS = 150.0  # the default of `[game] max_speed_mps`
MAX_NAME_LEN = 128
MAX_POLICY_VERSION = 2**31 - 1


@dataclass(frozen=True)
class ContextSpec:
    """Which past frames and vectors a sample carries, in game ticks; shared by collector and player."""

    fps: float
    frames: int
    frame_stride_s: float
    history: int
    history_stride_s: float
    label_shift_s: float

    @classmethod
    def from_inputs(cls, inputs: InputsConfig, fps: float) -> ContextSpec:
        if inputs.sequence_length > 1 and inputs.stacked_frames > 1:
            raise SampleError("inputs: use stacked_frames or sequence_length, not both")
        if inputs.sequence_length > 1:
            frames, stride = inputs.sequence_length, inputs.sequence_stride_s
        else:
            frames, stride = inputs.stacked_frames, inputs.stacked_stride_s
        return cls(
            fps=fps,
            frames=frames,
            frame_stride_s=stride,
            history=inputs.history_length,
            history_stride_s=inputs.history_stride_s,
            label_shift_s=inputs.label_shift_s,
        )

    def ticks(self, seconds: float) -> int:
        """Game ticks closest to `seconds` (at least 1 for a positive duration)."""
        return max(1, round(seconds * self.fps)) if seconds > 0 else 0

    @property
    def frame_stride(self) -> int:
        return self.ticks(self.frame_stride_s)

    @property
    def history_stride(self) -> int:
        return self.ticks(self.history_stride_s)

    @property
    def label_shift(self) -> int:
        return self.ticks(self.label_shift_s)

    @property
    def lookback(self) -> int:
        """Ticks of past observations needed to build one sample."""
        return max((self.frames - 1) * self.frame_stride, self.history * self.history_stride)


@dataclass(frozen=True)
class SampleSchema:
    """The shapes a sample must have under the active config; everything else is rejected."""

    height: int
    width: int
    frames: int
    history: int
    controls: int = len(CONTROL_NAMES)
    max_samples: int = 4096
    #: how rows' frames are coded under this config (`[buffers] frame_codec`); the server
    #: accepts only this one, readers decode any they know (rows from before a change)
    frame_codec: str = frames_mod.RAW
    #: the fastest speed a sample may report, m/s (`[game] max_speed_mps`)
    max_speed: float = MAX_SPEED_MPS

    @classmethod
    def from_config(cls, cfg: Config) -> SampleSchema:
        ctx = ContextSpec.from_inputs(cfg.inputs, cfg.game.fps)
        return cls(cfg.game.hood_height, cfg.game.hood_width, ctx.frames, ctx.history,
                   frame_codec=cfg.buffers.frame_codec, max_speed=cfg.game.max_speed_mps)

    @property
    def frames_shape(self) -> tuple[int, int, int, int]:
        """One row's frames: [F, H, W, 3]."""
        return (self.frames, self.height, self.width, 3)

    @property
    def max_head_bytes(self) -> int:
        """The most a valid row's head (prefix and header) can take under this schema: its
        numbers at 9 bytes each (msgpack float64) plus names, the episode and the frames'
        shape. Longer heads are refused before they are decoded (bloat costs memory and CPU)."""
        numbers = sum(math.prod(shape) for name, shape in self.row_shapes().items() if name != "frames")
        return 1024 + MAX_NAME_LEN + 9 * (numbers + len(PROVENANCE)) + frames_mod.FRAMES_PEEK

    @property
    def max_manifest_bytes(self) -> int:
        """The most a valid manifest can take: a meta and `max_samples` row heads."""
        return MAX_HEAD_BYTES + self.max_samples * (self.max_head_bytes + 8)

    def row_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "frames": (self.frames, self.height, self.width, 3),
            "speed": (),
            "purpose": (2,),
            "controls": (self.controls,),
            "targets": (self.controls,),
            "history": (self.history, len(HISTORY_FEATURES)),
            "game_time": (),
        }

    def validate_columns(self, columns: Any) -> int:
        """Check every field's dtype, shape and values; return the number of samples."""
        if not isinstance(columns, dict):
            raise SampleError("columns must be a map of field -> array")
        unknown = set(columns) - set(FIELDS)
        missing = set(FIELDS) - set(columns)
        if unknown or missing:
            raise SampleError(f"fields wrong: missing {sorted(missing)}, unknown {sorted(unknown)}")
        n = None
        for name, row_shape in self.row_shapes().items():
            arr = columns[name]
            if not isinstance(arr, np.ndarray):
                raise SampleError(f"{name}: expected an array, got {type(arr).__name__}")
            if arr.dtype != DTYPES[name]:
                raise SampleError(f"{name}: dtype {arr.dtype}, expected {np.dtype(DTYPES[name])}")
            if arr.ndim != 1 + len(row_shape) or tuple(arr.shape[1:]) != row_shape:
                raise SampleError(f"{name}: shape {list(arr.shape)}, expected [n, *{list(row_shape)}]")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise SampleError(f"{name}: {arr.shape[0]} samples, other fields have {n}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise SampleError(f"{name}: contains NaN or infinity")
        assert n is not None
        if not 1 <= n <= self.max_samples:
            raise SampleError(f"a set must hold 1..{self.max_samples} samples, got {n}")
        for name in ("controls", "targets"):
            if np.abs(columns[name]).max() > 1.0 + 1e-6:
                raise SampleError(f"{name}: values outside [-1, 1]")
        if np.abs(columns["speed"]).max() > self.max_speed:
            raise SampleError(f"speed: values beyond {self.max_speed} m/s ([game] max_speed_mps)")
        return int(n)


def check_provenance(captured_at: Any, policy_version: Any, row: int) -> None:
    """A row's capture time is a finite, non-negative float and its policy version a
    non-negative int (a collector may lie about its own rows, not break the trainer's stats)."""
    if not isinstance(captured_at, float) or not math.isfinite(captured_at) or captured_at < 0:
        raise SampleError(f"row {row}: captured_at must be a finite, non-negative number of seconds")
    if type(policy_version) is not int or not 0 <= policy_version <= MAX_POLICY_VERSION:
        raise SampleError(f"row {row}: policy_version must be an int in 0..{MAX_POLICY_VERSION}")


def empty_columns(schema: SampleSchema, n: int) -> dict[str, np.ndarray]:
    """Zero-filled columns of the right shapes, for synthetic batches and tests."""
    return {name: np.zeros((n, *shape), dtype=DTYPES[name]) for name, shape in schema.row_shapes().items()}
