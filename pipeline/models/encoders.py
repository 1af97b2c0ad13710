"""Small encoders around the backbone: vectors (speed, Purpose, controls), history, frame sequences.

Raw inputs are normalised here, inside the model, so the trainer and the player can
never disagree about scaling: speed / 30 m/s or log1p(m/s) (`inputs.speed_encoding`), Purpose
distance as log1p(m) / 5 and its direction as (sin, cos) so -pi and pi are the same heading.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SPEED_SCALE = 30.0
DISTANCE_SCALE = 5.0
#: features per history step after normalisation: accel, steering, speed, log-dist, sin, cos
HISTORY_DIM = 6


def speed_features(speed: Tensor, encoding: str) -> Tensor:
    """Speed in m/s -> the model's feature. `linear` (/ 30) leaves 0 and 3 m/s 0.1 apart, too
    little for a standstill to be told from a slow roll; `log` (log1p) puts them 1.39 apart and,
    like `linear`, keeps the sign of a car that reverses."""
    if encoding == "log":
        return torch.sign(speed) * torch.log1p(speed.abs())
    return speed / SPEED_SCALE


def purpose_features(purpose: Tensor) -> Tensor:
    """`[..., 2]` (distance m, direction rad) -> `[..., 3]` (log-distance, sin, cos)."""
    dist = torch.log1p(purpose[..., 0].clamp(min=0)) / DISTANCE_SCALE
    return torch.stack([dist, torch.sin(purpose[..., 1]), torch.cos(purpose[..., 1])], dim=-1)


def history_features(history: Tensor, speed_encoding: str = "linear") -> Tensor:
    """`[B, N, 5]` history rows -> `[B, N, 6]` normalised features."""
    return torch.cat(
        [history[..., 0:2], speed_features(history[..., 2:3], speed_encoding), purpose_features(history[..., 3:5])],
        dim=-1,
    )


class VectorEncoder(nn.Module):
    """Speed, Purpose and current controls (whichever the config enables) -> one small vector."""

    def __init__(self, speed: bool, purpose: bool, controls: bool, out_dim: int = 64,
                 speed_encoding: str = "linear") -> None:
        super().__init__()
        self.use_speed, self.use_purpose, self.use_controls = speed, purpose, controls
        self.speed_encoding = speed_encoding
        in_dim = int(speed) + 3 * int(purpose) + 2 * int(controls)
        self.in_dim = in_dim
        self.out_dim = out_dim if in_dim else 0
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True)) if in_dim else None

    def forward(self, batch: dict[str, Tensor]) -> Tensor | None:
        if self.net is None:
            return None
        parts = []
        if self.use_speed:
            parts.append(speed_features(batch["speed"].float()[:, None], self.speed_encoding))
        if self.use_purpose:
            parts.append(purpose_features(batch["purpose"].float()))
        if self.use_controls:
            parts.append(batch["controls"].float())
        return self.net(torch.cat(parts, dim=1))


class HistoryEncoder(nn.Module):
    """The last N controls/speed/Purpose vectors through an MLP or an LSTM (as in the original)."""

    def __init__(self, length: int, kind: str, hidden: int = 128, speed_encoding: str = "linear") -> None:
        super().__init__()
        self.kind = kind
        self.speed_encoding = speed_encoding
        self.out_dim = hidden
        if kind == "lstm":
            self.lstm = nn.LSTM(HISTORY_DIM, hidden, batch_first=True)
        else:
            self.mlp = nn.Sequential(
                nn.Linear(length * HISTORY_DIM, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
            )

    def forward(self, history: Tensor) -> Tensor:
        x = history_features(history.float(), self.speed_encoding)
        if self.kind == "lstm":
            out, _ = self.lstm(x)
            return out[:, -1]
        return self.mlp(x.flatten(1))


class SequenceEncoder(nn.Module):
    """Feature maps of F frames -> LSTM; keeps a spatial grid of tokens (seed 004: CLS alone drives blind)."""

    def __init__(self, channels: int, h: int, w: int, hidden: int, max_grid: int = 8) -> None:
        super().__init__()
        reduced = 32 if channels <= 256 else 64
        gh, gw = min(h, max_grid), min(w, max_grid)
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, reduced, 1, bias=False),
            nn.BatchNorm2d(reduced),
            nn.ReLU(inplace=True),
            nn.Conv2d(reduced, reduced, 3, padding=1, bias=False),
            nn.BatchNorm2d(reduced),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((gh, gw)),
            nn.Flatten(1),
            nn.Linear(reduced * gh * gw, hidden),
            nn.ReLU(inplace=True),
        )
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.out_dim = hidden

    def forward(self, maps: Tensor) -> Tensor:
        """`maps` is `[B, F, C, h, w]`, oldest frame first; returns the LSTM state after the newest."""
        b, f = maps.shape[:2]
        tokens = self.reduce(maps.flatten(0, 1)).view(b, f, -1)
        out, _ = self.lstm(tokens)
        return out[:, -1]


def head_mlp(in_dim: int, widths: list[int], size: int, dropout: float = 0.0) -> nn.Sequential:
    """The original per-output head: Dense 256 -> 64 -> 16 (ReLU) -> Dense `size`, widths configurable."""
    layers: list[nn.Module] = []
    dim = in_dim
    for width in widths:
        layers += [nn.Linear(dim, width), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        dim = width
    layers.append(nn.Linear(dim, size))
    return nn.Sequential(*layers)
