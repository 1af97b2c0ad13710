"""Balancing at training time: per-row loss weights from the frequency of each row's bin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.collect.bins import build_binnings
from pipeline.config import OutputConfig
from pipeline.errors import ConfigError
from pipeline.models.outputs import build_output
from pipeline.train.bin_weights import BinWeights
from tests.factories import tiny_config

STEER = OutputConfig(name="steering", type="regression", control="steering", bins=[-1.0, -0.05, 0.05, 1.0])
THROTTLE = OutputConfig(name="acceleration_braking", type="regression", control="acceleration_braking")
ALL_TYPES = [
    OutputConfig(name="steering", type="regression", control="steering"),
    OutputConfig(name="steer_cls", type="classification", control="steering", classes=21),
    OutputConfig(name="accel_delta", type="discrete_delta", control="acceleration_braking"),
    OutputConfig(name="keys", type="keys", control="both"),
]


def _rows(steering: list[float], throttle: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    targets = np.array([[throttle, s] for s in steering], dtype=np.float32)
    return targets, np.zeros_like(targets)


def test_weights_are_the_inverse_square_root_of_the_bin_frequency_with_mean_one() -> None:
    weights = BinWeights(build_binnings([STEER, THROTTLE]), [0.5, 0.5])
    w = weights(*_rows([0.0, 0.01, -0.02, 0.6]))  # three straight ahead, one turn
    steer = w[:, 0]
    assert math.isclose(steer.mean(), 1.0, rel_tol=1e-6)
    assert np.allclose(steer[:3], steer[0]) and math.isclose(steer[3] / steer[0], math.sqrt(3), rel_tol=1e-5)
    assert np.allclose(w[:, 1], 1.0)  # one throttle bin in the batch: nothing to balance


def test_power_one_balances_fully() -> None:
    w = BinWeights(build_binnings([STEER]), [1.0])(*_rows([0.0, 0.0, 0.0, 0.6]))[:, 0]
    assert math.isclose(w[3] / w[0], 3.0, rel_tol=1e-5)  # each bin then weighs as much as the other


def test_frequencies_follow_the_recent_draws() -> None:
    """A bin common long ago but rare now gets the large weight: the counts fade."""
    weights = BinWeights(build_binnings([STEER]), [0.5], window_rows=64)
    for _ in range(50):
        weights(*_rows([0.0] * 4))
    before = weights(*_rows([0.0, 0.6]))[:, 0]
    assert before[1] > 2 * before[0]  # the turn is rare
    for _ in range(100):
        weights(*_rows([0.6] * 4))
    after = weights(*_rows([0.0, 0.6]))[:, 0]
    assert after[0] > 2 * after[1]  # now straight ahead is


def test_an_output_without_weighting_keeps_weight_one() -> None:
    steer, throttle = STEER.model_copy(update={"bin_weighting": 0.5}), THROTTLE
    weights = BinWeights.for_outputs([steer, throttle])
    assert weights is not None and BinWeights.for_outputs([STEER, THROTTLE]) is None
    w = weights(*_rows([0.0, 0.0, 0.6], throttle=-1.0))
    assert np.all(w[:, 1] == 1.0) and w[2, 0] > w[0, 0]


def test_bad_powers_are_refused() -> None:
    with pytest.raises(ValueError, match="one power"):
        BinWeights(build_binnings([STEER]), [1.5])
    with pytest.raises(ValueError, match="one power"):
        BinWeights(build_binnings([STEER, THROTTLE]), [0.5])
    with pytest.raises(ConfigError, match="bin_weighting"):
        tiny_config(outputs=[{"name": "steering", "control": "steering", "bin_weighting": 2}])


@pytest.mark.parametrize("cfg", ALL_TYPES, ids=lambda c: c.type)
def test_the_weighted_loss_is_the_weighted_mean_of_the_rows_losses(cfg: OutputConfig) -> None:
    torch.manual_seed(0)
    head = build_output(cfg)
    n = 6
    targets = torch.rand(n, 2) * 2 - 1
    controls = torch.rand(n, 2) * 1.2 - 0.6
    encoded = head.encode(targets, controls)
    logits = torch.randn(n, head.size)
    per_row = torch.stack([head.loss(logits[i:i + 1], encoded[i:i + 1]) for i in range(n)])
    w = torch.tensor([2.0, 0.0, 1.0, 0.5, 1.5, 1.0])
    assert torch.isclose(head.loss(logits, encoded, w), (per_row * w).mean(), rtol=1e-5)
    assert torch.isclose(head.loss(logits, encoded, torch.ones(n)), head.loss(logits, encoded), rtol=1e-6)


def test_the_learner_weights_every_batch_it_prepares() -> None:
    from pipeline.models import build_model, compute_loss
    from pipeline.train.learner import Learner

    cfg = tiny_config(model={"width": 8, "dense": 16, "head": [8]})
    size = (cfg.game.hood_height, cfg.game.hood_width)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, size)
    weights = BinWeights(build_binnings(cfg.outputs), [0.5] * len(cfg.outputs))
    learner = Learner(model, 1e-3, device="cpu", row_weights=weights)
    n = 8
    steering = [0.0] * 6 + [0.7, -0.7]
    columns = {"frames": np.random.default_rng(0).integers(0, 256, (n, 1, *size, 3), dtype=np.uint8),
               "speed": np.zeros(n, np.float32), "purpose": np.zeros((n, 2), np.float32),
               "controls": np.zeros((n, 2), np.float32),
               "targets": np.array([[1.0, s] for s in steering], np.float32)}
    batch = learner.prepare(columns)
    steer_k = [o.name for o in cfg.outputs].index("steering")
    rw = batch["row_weights"]
    assert rw.shape == (n, len(cfg.outputs)) and rw[6, steer_k] > 2 * rw[0, steer_k]
    model.eval()  # the same forward pass for both losses
    with torch.no_grad():
        logits = model(batch)
        weighted = compute_loss(model, logits, batch, with_metrics=False)[1]["steering"]
        plain = compute_loss(model, logits, {k: v for k, v in batch.items() if k != "row_weights"},
                             with_metrics=False)[1]["steering"]
    assert not torch.isclose(weighted, plain)
    assert learner.step_tensors(batch)["loss"] > 0
