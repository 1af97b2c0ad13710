"""DAgger: the model drives a share of the time, the game's expert labels every tick.

Behaviour cloning errs in states the NPC never visits, and errors compound. With
`[collection] model_drives` > 0 a collector lets the latest published model drive a share
of `dagger_segment_s` segments (`MixedDriver`); a game that declares `expert_labels` (the
simulator, a plug-in), built with `expert_labels=True`, labels every tick with what its
expert would do there (`info["expert"]`). `scripts/train_default.py` uses the same driver offline.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from pipeline.collect.context import ContextBuilder
    from pipeline.config import Config
    from pipeline.games.base import Controls, Observation
    from pipeline.wire.weights import WeightsInfo, WeightsStore


class MixedDriver:
    """DAgger's mixture policy: each `segment_s` of game time the NPC drives with probability
    `beta`, else the model; the game labels every tick with its expert's command either way. A
    model stuck for seconds hands over to the NPC, whose way out is labelled, till the segment ends.
    """

    def __init__(self, model: torch.nn.Module, beta: float, segment_s: float, rng: random.Random) -> None:
        self.model, self.beta, self.segment_s, self.rng = model, beta, segment_s, rng
        self.segment = -1
        self.model_drives = False

    def __call__(self, builder: ContextBuilder, obs: Observation) -> Controls | None:
        from pipeline.models import predict

        segment = int(obs.game_time // self.segment_s)
        if segment != self.segment:
            self.segment, self.model_drives = segment, self.rng.random() >= self.beta
        self.model_drives = self.model_drives and not obs.info.get("stuck")
        if not self.model_drives:
            return None
        return predict(self.model, builder.context(0))[1]


def build_cpu_model(cfg: Config, tensors: dict[str, Any]) -> torch.nn.Module:
    """The configured model with these weights, on the CPU, torch on one thread (a collector
    shares its core with the simulator; more threads only contend)."""
    import torch

    from pipeline.models.loading import build_model_from

    torch.set_num_threads(1)
    return build_model_from(cfg, tensors)


def fetch_latest_model(store: WeightsStore, cfg: Config, have_version: int
                       ) -> tuple[WeightsInfo | None, torch.nn.Module | None]:
    """The latest published weights, verified (sha256) and built, when newer than `have_version`.

    Returns (info, model); (info, None) when the latest is `have_version` (keep the one you
    have), (None, None) when nothing is published. Raises WeightsError for weights of another
    model or that do not fit the config, and Redis errors as they come.
    """
    info = store.latest_info()
    if info is None or info.version == have_version:
        return info, None
    info, tensors = store.fetch(model=cfg.run.name)
    return info, build_cpu_model(cfg, tensors)
