"""bf16 autocast where it pays: CUDA, and a CPU with native bf16 instructions (AVX512-BF16 or
AMX), where the default model's step ran 1.9x as fast; a CPU that would emulate bf16 keeps fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models import build_model
from pipeline.train.learner import Learner, bf16_autocast_pays
from tests.factories import tiny_config

CPUINFO = Path("/proc/cpuinfo")


def _native_bf16_flags() -> bool:
    flags = set(CPUINFO.read_text().split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.mark.skipif(not CPUINFO.exists(), reason="reads the CPU's flags from /proc/cpuinfo (Linux)")
def test_the_cpu_check_matches_the_cpus_own_flags() -> None:
    assert bf16_autocast_pays(torch.device("cpu")) == _native_bf16_flags()
    assert not bf16_autocast_pays(torch.device("meta"))


@pytest.mark.parametrize("amp", [True, False])
def test_the_training_step_runs_in_bf16_only_where_amp_pays(amp: bool) -> None:
    cfg = tiny_config(model={"width": 8, "dense": 16, "head": [8]})
    size = (cfg.game.hood_height, cfg.game.hood_width)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, size)
    learner = Learner(model, 1e-3, device="cpu", amp=amp)
    seen: list[torch.dtype] = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    frames = torch.randint(0, 256, (4, 1, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    batch = {"frames": frames, "speed": torch.zeros(4), "purpose": torch.zeros(4, 2),
             "controls": torch.zeros(4, 2), "targets": torch.full((4, 2), 0.5)}
    losses = [learner.step_tensors(batch)["loss"] for _ in range(20)]
    expected = amp and bf16_autocast_pays(torch.device("cpu"))
    assert learner.amp == expected
    assert seen[0] == (torch.bfloat16 if expected else torch.float32)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32 either way
    assert losses[-1] < losses[0] * 0.8, losses  # and it learns
