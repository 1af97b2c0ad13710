"""Backbones by name: the built-in small CNN, and timm models when the `timm` extra is installed.

Every backbone maps images `[B, C, H, W]` (already normalised) to feature maps
`[B, out_channels, h, w]`: the Convcam shows them, the sequence encoder keeps their
spatial layout, the plain path average-pools them (as the original did).
Pretrained weights come only from a local safetensors file (no download, no pickle).
"""

from __future__ import annotations

import math
from pathlib import Path

import structlog
import torch
from torch import Tensor, nn

from pipeline.errors import ConfigError, MissingExtraError

log = structlog.get_logger(__name__)

#: Short names -> timm model names (any other timm model: "timm:<name>").
TIMM_ALIASES: dict[str, str] = {
    "xception": "legacy_xception",
    "inception_resnet_v2": "inception_resnet_v2",
    "regnet": "regnety_016",
    "vit": "vit_base_patch14_dinov2",
    "dinov2": "vit_base_patch14_dinov2",
    "dinov2_small": "vit_small_patch14_dinov2",
}
SMALL_CNN_STAGES: tuple[int, ...] = (1, 2, 3, 4, 6)
#: GroupNorm's groups: at most this many, and a divisor of the channels (it needs one)
MAX_GROUPS = 8


def norm_layer(kind: str, channels: int) -> nn.Module:
    """`batch`: statistics of the batch in training, running ones at inference; `group`: of each image alone.

    A live batch comes from the last minute of driving, often one or two environments: batch
    statistics then follow what the collectors drive now, and the running ones the player
    uses follow them. GroupNorm computes the same thing in training and at inference.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(MAX_GROUPS, channels), channels)
    raise ConfigError(f"model.norm: unknown normalisation {kind!r}; use batch or group")


def _conv_norm_relu(cin: int, cout: int, kernel: int, stride: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        norm_layer(norm, cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Five strided conv stages with BatchNorm (or GroupNorm)/ReLU: about 1/32 of the input size, fast on 2 CPU cores."""

    def __init__(self, in_chans: int = 3, width: int = 32, stages: tuple[int, ...] = SMALL_CNN_STAGES,
                 norm: str = "batch") -> None:
        super().__init__()
        layers = []
        cin = in_chans
        for i, mult in enumerate(stages):
            cout = width * mult
            layers.append(_conv_norm_relu(cin, cout, 5 if i == 0 else 3, 2, norm))
            cin = cout
        self.stages = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(x)


class TimmBackbone(nn.Module):
    """A timm model without its classifier; ViT-style token outputs become `[B, D, h, w]` maps."""

    def __init__(self, timm_name: str, in_chans: int, image_hw: tuple[int, int]) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise MissingExtraError("timm", "timm", f"model.backbone (timm model {timm_name!r})") from None
        kwargs: dict[str, object] = {"pretrained": False, "num_classes": 0, "in_chans": in_chans}
        self.is_vit = "vit" in timm_name or "deit" in timm_name or "eva" in timm_name
        if self.is_vit:
            kwargs["img_size"] = tuple(image_hw)
            kwargs["global_pool"] = ""
        try:
            self.model = timm.create_model(timm_name, **kwargs)
        except RuntimeError as exc:  # unknown model name
            raise ConfigError(f"model.backbone: timm has no model {timm_name!r}: {exc}") from None
        self.out_channels = int(self.model.num_features)
        self.prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))

    def forward(self, x: Tensor) -> Tensor:
        feats = self.model.forward_features(x)
        if feats.dim() == 4:
            return feats
        tokens = feats[:, self.prefix_tokens :]  # patch tokens only; CLS alone "drives blind"
        grid = getattr(self.model.patch_embed, "grid_size", None)
        if grid is None:
            raise ConfigError("model.backbone: cannot map this transformer's tokens to a grid")
        h, w = int(grid[0]), int(grid[1])
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def backbone_kind(name: str) -> str:
    """`small_cnn` or the timm model name the config's backbone refers to."""
    if name == "small_cnn":
        return name
    if name.startswith("timm:"):
        return name[len("timm:") :]
    if name in TIMM_ALIASES:
        return TIMM_ALIASES[name]
    raise ConfigError(
        f"model.backbone: unknown backbone {name!r}; use small_cnn, one of {sorted(TIMM_ALIASES)} "
        "or 'timm:<model name>'"
    )


def build_backbone(
    name: str,
    in_chans: int,
    image_hw: tuple[int, int],
    width: int = 32,
    pretrained: str = "",
    frozen: bool = False,
    norm: str = "batch",
) -> nn.Module:
    """One backbone with `out_channels`; weights from a local file; frozen = no gradients."""
    kind = backbone_kind(name)
    net: nn.Module = (SmallCNN(in_chans, width, norm=norm) if kind == "small_cnn"
                      else TimmBackbone(kind, in_chans, image_hw))
    if pretrained:
        load_pretrained(net, pretrained)
    if frozen:
        if not pretrained:
            log.warning("frozen_backbone_without_weights", backbone=name,
                        hint="a frozen random backbone learns nothing; set model.pretrained")
        for p in net.parameters():
            p.requires_grad_(False)
    return net


def load_pretrained(net: nn.Module, path: str) -> None:
    """Load backbone weights from a local safetensors file; keys of a bare timm model also fit."""
    file = Path(path).expanduser()
    if file.suffix != ".safetensors":
        raise ConfigError(f"model.pretrained: {path!r} must be a .safetensors file (no pickle)")
    if not file.is_file():
        raise ConfigError(f"model.pretrained: {path!r} not found (weights are never downloaded)")
    from safetensors.torch import load_file

    state = load_file(str(file))
    target = net.model if isinstance(net, TimmBackbone) else net
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"model.pretrained: no tensor in {path!r} matches the backbone")
    missing = [k for k in own if k not in usable]
    target.load_state_dict(usable, strict=False)
    log.info("pretrained_loaded", path=str(file), tensors=len(usable), missing=len(missing),
             skipped=len(state) - len(usable))


def feature_shape(net: nn.Module, in_chans: int, image_hw: tuple[int, int]) -> tuple[int, int, int]:
    """`(C, h, w)` of the feature map for one image of this size (one dummy forward)."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(1, in_chans, *image_hw))
    net.train(was_training)
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])
