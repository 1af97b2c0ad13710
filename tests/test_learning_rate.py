"""The learning-rate schedule: a cosine to a floor over `[trainer] lr_decay_batches`, then flat."""

from __future__ import annotations


def test_the_learning_rate_falls_on_a_cosine_to_its_floor_then_stays() -> None:
    import math

    from pipeline.train.learner import decayed_learning_rate

    assert decayed_learning_rate(1e-3, 0, 1000, 0.1) == 1e-3
    assert math.isclose(decayed_learning_rate(1e-3, 500, 1000, 0.1), 1e-3 * (0.1 + 0.9 * 0.5))
    assert math.isclose(decayed_learning_rate(1e-3, 1000, 1000, 0.1), 1e-4)
    assert math.isclose(decayed_learning_rate(1e-3, 10**6, 1000, 0.1), 1e-4)
    assert decayed_learning_rate(1e-3, 10**6, 0, 0.1) == 1e-3  # no decay


def test_the_learner_steps_at_the_scheduled_rate() -> None:
    import math

    import torch

    from pipeline.models import build_model
    from pipeline.train.learner import Learner, decayed_learning_rate
    from tests.factories import tiny_config

    cfg = tiny_config(model={"width": 8, "dense": 16, "head": [8]})
    size = (cfg.game.hood_height, cfg.game.hood_width)
    learner = Learner(build_model(cfg.model, cfg.inputs, cfg.outputs, size), 2e-3, device="cpu",
                      lr_decay_batches=4, lr_final_fraction=0.25)
    frames = torch.randint(0, 256, (4, 1, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    batch = {"frames": frames, "speed": torch.zeros(4), "purpose": torch.zeros(4, 2),
             "controls": torch.zeros(4, 2), "targets": torch.zeros(4, 2)}
    used = [learner.step_tensors(batch)["learning_rate"] for _ in range(6)]
    assert all(math.isclose(lr, decayed_learning_rate(2e-3, i, 4, 0.25)) for i, lr in enumerate(used))
    assert math.isclose(used[-1], 5e-4) and used[0] == 2e-3
