"""DrivingModel: backbone(s) + vector/history/sequence encoders + Dense trunk + one head per output.

Built entirely from config (`build_model`). Frames arrive as uint8 `[B, F, H, W, 3]` and
are normalised here, so the trainer and the player feed the same raw tensors. With
`stacked_frames` the F frames are concatenated on channels; with `sequence_length` each
frame goes through the backbone and the feature maps through `SequenceEncoder` (LSTM).
`state_dict()` holds tensors only (safetensors-ready); the normalisation constants are
non-persistent buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pipeline.config import InputsConfig, ModelConfig, OutputConfig
from pipeline.errors import ConfigError, SampleError
from pipeline.models.backbones import build_backbone, feature_shape
from pipeline.models.encoders import HistoryEncoder, SequenceEncoder, VectorEncoder, head_mlp
from pipeline.models.outputs import OutputHead, build_outputs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DrivingModel(nn.Module):
    """Maps one batch of inputs to logits per output; `heads` know how to read those logits."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        inputs_cfg: InputsConfig,
        outputs_cfg: Sequence[OutputConfig],
        image_hw: tuple[int, int] = (120, 160),
    ) -> None:
        super().__init__()
        if inputs_cfg.sequence_length > 1 and inputs_cfg.stacked_frames > 1:
            raise ConfigError("inputs: use stacked_frames or sequence_length, not both")
        self.model_cfg, self.inputs_cfg = model_cfg, inputs_cfg
        self.heads: list[OutputHead] = build_outputs(list(outputs_cfg))
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.sequence = inputs_cfg.sequence_length > 1
        self.num_frames = inputs_cfg.sequence_length if self.sequence else inputs_cfg.stacked_frames
        self.history_length = inputs_cfg.history_length
        self.last_features: Tensor | tuple[Tensor, ...] | None = None
        self.frozen = model_cfg.frozen

        img_dim = 0
        self.backbones = nn.ModuleList()
        self.sequence_encoder: SequenceEncoder | None = None
        if inputs_cfg.image:
            in_chans = 3 if self.sequence else 3 * self.num_frames
            for _ in range(2 if model_cfg.dual_backbone else 1):
                self.backbones.append(
                    build_backbone(model_cfg.backbone, in_chans, self.image_hw, model_cfg.width,
                                   model_cfg.pretrained, model_cfg.frozen, model_cfg.norm)
                )
            c, h, w = feature_shape(self.backbones[0], in_chans, self.image_hw)
            c *= len(self.backbones)
            if self.sequence:
                self.sequence_encoder = SequenceEncoder(c, h, w, model_cfg.lstm_hidden)
                img_dim = self.sequence_encoder.out_dim
            else:
                img_dim = c
        reps = 1 if self.sequence else self.num_frames
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN * reps).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD * reps).view(1, -1, 1, 1), persistent=False)

        self.vectors = VectorEncoder(inputs_cfg.speed, inputs_cfg.purpose, inputs_cfg.controls,
                                     speed_encoding=inputs_cfg.speed_encoding)
        self.history: HistoryEncoder | None = None
        if inputs_cfg.history_length:
            self.history = HistoryEncoder(inputs_cfg.history_length, inputs_cfg.history_encoder,
                                          model_cfg.lstm_hidden, speed_encoding=inputs_cfg.speed_encoding)
        trunk_in = img_dim + self.vectors.out_dim + (self.history.out_dim if self.history else 0)
        if trunk_in == 0:
            raise ConfigError("inputs: the model has no input (enable image, speed, purpose, ...)")
        self.trunk = nn.Sequential(nn.Linear(trunk_in, model_cfg.dense), nn.ReLU(inplace=True))
        if model_cfg.dropout:
            self.trunk.append(nn.Dropout(model_cfg.dropout))
        # keys are prefixed: an output may be named like a Module attribute ("keys", "train")
        self.out = nn.ModuleDict(
            {f"head_{h.name}": head_mlp(model_cfg.dense, list(model_cfg.head), h.size, model_cfg.dropout)
             for h in self.heads}
        )

    def train(self, mode: bool = True) -> DrivingModel:
        """Frozen backbones stay in eval mode (their BatchNorm statistics are part of the weights)."""
        super().train(mode)
        if self.frozen:
            self.backbones.eval()
        return self

    def _image(self, frames: Tensor) -> Tensor:
        if frames.dim() != 5 or frames.shape[1] != self.num_frames or frames.shape[-1] != 3:
            raise SampleError(
                f"frames: expected [B, {self.num_frames}, H, W, 3] uint8, got {list(frames.shape)}"
            )
        b, f, h, w, _ = frames.shape
        x = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)
        x = x.reshape(b * f, 3, h, w) if self.sequence else x.reshape(b, f * 3, h, w)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = [bb(x) for bb in self.backbones]
        if self.sequence:
            last = tuple(m.view(b, f, *m.shape[1:])[:, -1].detach() for m in maps)
        else:
            last = tuple(m.detach() for m in maps)
        self.last_features = last[0] if len(last) == 1 else last
        fmap = maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)
        if self.sequence_encoder is not None:
            return self.sequence_encoder(fmap.view(b, f, *fmap.shape[1:]))
        return fmap.mean(dim=(2, 3))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Logits per output name for a batch from `batch_to_tensors`."""
        parts = []
        if len(self.backbones):
            parts.append(self._image(batch["frames"]))
        vec = self.vectors(batch)
        if vec is not None:
            parts.append(vec)
        if self.history is not None:
            parts.append(self.history(batch["history"]))
        z = self.trunk(torch.cat(parts, dim=1))
        return {h.name: self.out[f"head_{h.name}"](z) for h in self.heads}

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def build_model(
    model_cfg: ModelConfig,
    inputs_cfg: InputsConfig,
    outputs_cfg: Sequence[OutputConfig],
    image_hw: tuple[int, int] = (120, 160),
) -> DrivingModel:
    """The model a config describes; `image_hw` is (game.hood_height, game.hood_width)."""
    return DrivingModel(model_cfg, inputs_cfg, outputs_cfg, image_hw)
