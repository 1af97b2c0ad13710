"""Balancing bins of one output, derived from its declaration, as in the reference; and
the module stays free of torch, so collectors stay light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.collect.bins import Binning
from pipeline.config import OutputConfig
from pipeline.errors import ConfigError

REG = OutputConfig(name="steering", type="regression", control="steering")
CLS = OutputConfig(name="steer_cls", type="classification", control="steering", classes=21)
DELTA = OutputConfig(name="accel_delta", type="discrete_delta", control="acceleration_braking")
KEYS = OutputConfig(name="keys", type="keys", control="both")


def test_regression_default_bins_are_tenths_plus_exact_endpoints() -> None:
    b = Binning(REG)
    assert b.num_bins == 22
    assert b.labels[0] == "=-1" and b.labels[-1] == "=1" and b.labels[1] == "(-1,-0.9)"
    assert b.bin_index(-1.0) == 0
    assert b.bin_index(-0.95) == 1
    assert b.bin_index(0.0) == 11  # [0, 0.1)
    assert b.bin_index(0.999) == 20
    assert b.bin_index(1.0) == 21
    assert b.bin_index(7.0) == 21  # outside the range: outermost bin


def test_accel_over_zero_one_has_twelve_bins_as_in_the_reference() -> None:
    assert Binning(OutputConfig(name="accel", range=(0.0, 1.0))).num_bins == 12


def test_v1_steering_bins_with_an_exact_zero() -> None:
    cfg = OutputConfig(name="steering", control="steering", bins=[-1, -0.6, -0.2, 0, 0, 0.2, 0.6, 1])
    b = Binning(cfg)
    assert b.labels == ["=-1", "(-1,-0.6)", "[-0.6,-0.2)", "[-0.2,0)", "=0", "(0,0.2)", "[0.2,0.6)", "[0.6,1)", "=1"]
    assert [b.bin_index(v) for v in (-1, -0.7, -0.3, -0.1, 0, 0.1, 0.3, 0.7, 1)] == list(range(9))


def test_class_and_delta_and_key_bins() -> None:
    c = Binning(CLS)
    assert c.num_bins == 21 and c.bin_index(0.0) == 10 and c.bin_index(1.0) == 20 and c.bin_index(0.04) == 10
    assert len(c.bin_edges()) == 22
    d = Binning(DELTA)
    assert d.num_bins == 7
    # balance value of a delta output is target - control
    assert d.balance_value([0.5, 0.0], [0.2, 0.0]) == pytest.approx(0.3)
    assert d.bin_index(d.balance_value([0.5, 0.0], [0.2, 0.0])) == 6
    assert d.bin_index(0.0) == 3 and d.bin_index(-0.05) == 2
    k = Binning(KEYS)
    assert k.num_bins == 9  # {none, w, s} x {none, a, d}
    assert k.labels[0] == "none"
    assert k.labels[k.bin_index(k.balance_value([1.0, -1.0], [0, 0]))] == "w+a"
    assert k.labels[k.bin_index(k.balance_value([-1.0, 0.0], [0, 0]))] == "s"
    assert k.labels[k.bin_index(k.balance_value([0.2, 0.9], [0, 0]))] == "d"


def test_keys_reject_unknown_keys_and_bins() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        Binning(OutputConfig(name="k", type="keys", control="both", keys=["w", "q"]))
    with pytest.raises(ConfigError, match="bins"):
        Binning(OutputConfig(name="k", type="keys", control="both", bins=[0.0, 0.5]))


def test_bins_module_does_not_import_torch() -> None:
    code = "import sys, pipeline.collect.bins, pipeline.collect.balancing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
