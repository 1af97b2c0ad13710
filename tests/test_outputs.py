"""Output types: bins follow the reference, decode inverts encode, and each loss can learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.collect.bins import build_binnings
from pipeline.config import CONTROL_NAMES, OutputConfig
from pipeline.models.outputs import build_output, build_outputs

REG = OutputConfig(name="steering", type="regression", control="steering")
CLS = OutputConfig(name="steer_cls", type="classification", control="steering", classes=21)
DELTA = OutputConfig(name="accel_delta", type="discrete_delta", control="acceleration_braking")
KEYS = OutputConfig(name="keys", type="keys", control="both")
ALL = [REG, CLS, DELTA, KEYS]


# -- bins --------------------------------------------------------------------------------
def test_heads_answer_for_their_bins() -> None:
    for head, binning in zip(build_outputs(ALL), build_binnings(ALL), strict=True):
        assert head.num_bins == binning.num_bins
        assert head.bin_edges() == binning.bin_edges()
        v = head.balance_value([0.3, -0.4], [0.1, 0.1])
        assert head.bin_index(v) == binning.bin_of([0.3, -0.4], [0.1, 0.1])


# -- encode / decode ---------------------------------------------------------------------
def _perfect_logits(head, encoded: torch.Tensor) -> torch.Tensor:
    if head.config.type == "regression":
        return encoded[:, None]
    if head.config.type == "keys":
        return (encoded * 2 - 1) * 30.0
    return nn.functional.one_hot(encoded, head.size).float() * 60.0


def _targets_on_grid(head, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    controls = rng.uniform(-0.6, 0.6, size=(n, 2)).astype(np.float32)
    targets = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    kind = head.config.type
    if kind == "classification":
        targets[:, head.ci] = rng.choice(head.values.numpy(), size=n)
    elif kind == "discrete_delta":
        targets[:, head.ci] = controls[:, head.ci] + rng.choice(head.values.numpy(), size=n)
    elif kind == "keys":
        targets = rng.choice([-1.0, 0.0, 1.0], size=(n, 2)).astype(np.float32)
    return torch.from_numpy(targets), torch.from_numpy(controls)


@pytest.mark.parametrize("cfg", ALL, ids=lambda c: c.type)
def test_decode_inverts_encode(cfg: OutputConfig) -> None:
    head = build_output(cfg)
    targets, controls = _targets_on_grid(head, 64, np.random.default_rng(0))
    encoded = head.encode(targets, controls)
    decoded = head.decode(_perfect_logits(head, encoded), controls)
    assert set(decoded) == set(head.controls_driven())
    for name, values in decoded.items():
        ci = CONTROL_NAMES.index(name)
        assert values.shape == (64,)
        torch.testing.assert_close(values, targets[:, ci], atol=1e-4, rtol=0)
    metrics = head.metrics(_perfect_logits(head, encoded), targets, controls)
    assert metrics["mae"] < 1e-4
    if cfg.type != "regression":
        assert metrics["accuracy"] == 1.0


def test_decode_stays_in_range() -> None:
    for head in build_outputs(ALL):
        logits = torch.randn(16, head.size) * 100
        controls = torch.full((16, 2), 0.95)
        for values in head.decode(logits, controls).values():
            assert values.abs().max() <= 1.0


def test_regression_decode_clips_to_its_range() -> None:
    head = build_output(OutputConfig(name="accel", range=(0.0, 1.0)))
    out = head.decode(torch.tensor([[-0.5], [0.5], [3.0]]), torch.zeros(3, 2))["acceleration_braking"]
    assert out.tolist() == [0.0, 0.5, 1.0]


# -- learning ----------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", ALL, ids=lambda c: c.type)
def test_loss_falls_on_a_learnable_target(cfg: OutputConfig) -> None:
    torch.manual_seed(0)
    head = build_output(cfg)
    n = 256
    x = torch.randn(n, 4)
    controls = torch.rand(n, 2) * 1.2 - 0.6
    w = torch.tensor([[0.9, -0.5], [-0.4, 0.8], [0.3, 0.2], [0.0, -0.6]])
    targets = torch.tanh(x @ w)
    if cfg.type == "discrete_delta":  # the target is the current control plus a learnable delta
        targets = (controls + 0.3 * torch.tanh(x @ w)).clamp(-1, 1)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, head.size))
    inputs = torch.cat([x, controls], dim=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    encoded = head.encode(targets, controls)
    first = float(head.loss(net(inputs), encoded).detach())
    for _ in range(150):
        loss = head.loss(net(inputs), encoded)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(head.loss(net(inputs), encoded).detach())
    assert last < 0.5 * first
    assert head.metrics(net(inputs), targets, controls)["mae"] < 0.25


def _fit_one_value(cfg: OutputConfig, targets: torch.Tensor) -> float:
    """The single prediction a regression head settles on for these targets (one free parameter)."""
    head = build_output(cfg)
    value = torch.zeros(1, 1, requires_grad=True)
    opt = torch.optim.Adam([value], lr=0.02)
    controls = torch.zeros(len(targets), 2)
    encoded = head.encode(torch.stack([targets, targets], dim=1), controls)
    for _ in range(600):
        loss = head.loss(value.expand(len(targets), 1), encoded)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(value.detach())


def test_regression_l1_fits_the_median_and_l2_the_mean() -> None:
    """Throttle labels where 30% say 'brake hard': L1 keeps full throttle, L2 eases off."""
    targets = torch.tensor([1.0] * 7 + [-1.0] * 3)
    assert _fit_one_value(OutputConfig(name="accel"), targets) == pytest.approx(1.0, abs=0.05)
    assert _fit_one_value(OutputConfig(name="accel", loss="l2"), targets) == pytest.approx(0.4, abs=0.05)


def test_loss_choice_is_only_for_regression() -> None:
    with pytest.raises(ValueError, match="only for type 'regression'"):
        OutputConfig(name="steer_cls", type="classification", control="steering", loss="l2")
