"""Balancing v1 / v3 / v4: which sample lands in which round, when rounds are sent, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.collect.balancing import make_balancer
from pipeline.collect.bins import build_binnings
from pipeline.config import BalancingConfig, OutputConfig
from pipeline.wire.schema import SampleSchema
from pipeline.wire.stacking import rows_to_columns

# three classes each over [-1, 1] -> bins for exactly -1, 0, 1
OUTPUTS = [
    OutputConfig(name="accel", type="classification", control="acceleration_braking", classes=3),
    OutputConfig(name="steer", type="classification", control="steering", classes=3),
]


def row(accel: float, steer: float, t: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "frames": np.full((1, 2, 2, 3), 7, dtype=np.uint8),
        "speed": np.float32(3.0),
        "purpose": np.array([10.0, 0.1], dtype=np.float32),
        "controls": np.zeros(2, dtype=np.float32),
        "targets": np.array([accel, steer], dtype=np.float32),
        "history": np.zeros((0, 5), dtype=np.float32),
        "game_time": np.float64(t),
    }


def balancer(version: str = "v3", **kw: float) -> object:
    # one sample per bin and half the bins for a timed-out round: the mechanics these cases spell out
    cfg = BalancingConfig(version=version, **{"round_timeout_s": 100.0, "samples_per_bin": 1, "min_bins_filled": 0.5,
                                              **kw})
    return make_balancer(cfg, build_binnings(OUTPUTS))


def targets_of(rows: list[dict[str, np.ndarray]]) -> list[tuple[float, float]]:
    return [(float(r["targets"][0]), float(r["targets"][1])) for r in rows]


def feed(b: object, samples: list[tuple[float, float]], t0: float = 0.0) -> list:
    out = []
    for i, (a, s) in enumerate(samples):
        out += b.add(row(a, s, t0 + 0.1 * i))
    return out


def test_v3_one_round_per_output_each_sample_in_one_round() -> None:
    b = balancer("v3")
    assert feed(b, [(0, 0), (0, 0), (0, 0), (-1, 0)]) == []  # the 3rd (0,0) has no room anywhere
    done = b.add(row(1, 0, 1.0))
    assert [name for name, _ in done] == ["accel"]
    assert targets_of(done[0][1]) == [(-1, 0), (0, 0), (1, 0)]  # ordered by bin, one per bin
    # steering round already holds the 2nd (0,0); rare steering values go to it
    done = feed(b, [(0, -1), (0, 1)], t0=2.0)
    assert [name for name, _ in done] == ["steer"]
    assert targets_of(done[0][1]) == [(0, -1), (0, 0), (0, 1)]
    assert b.sent == {"accel": 3, "steer": 3}


def test_samples_per_bin() -> None:
    b = balancer("v3", samples_per_bin=2)
    done = feed(b, [(-1, 0), (-1, 0), (0, 0), (0, 0), (1, 0)])
    assert done == []
    done = b.add(row(1, 0.0, 1.0))
    assert len(done) == 1 and len(done[0][1]) == 6


def test_timeout_sends_a_round_with_enough_bins() -> None:
    b = balancer("v3", round_timeout_s=1.0, min_bins_filled=0.5)
    assert b.add(row(0, 0, 0.0)) == []  # accel round starts at t=0
    assert b.add(row(0, 0, 0.5)) == []  # steer round starts at t=0.5
    done = b.add(row(-1, 0, 1.2))  # accel: 2 of 3 bins, 1.2 s old -> sent
    assert [(n, targets_of(r)) for n, r in done] == [("accel", [(-1, 0), (0, 0)])]
    assert b.add(row(0, 0, 1.6)) == []  # steer: 1 of 3 bins at 1.1 s -> not enough, keeps waiting
    assert b.flush() == []  # episode end: both rounds hold 1/3 of their bins -> dropped


def test_flush_sends_rounds_that_meet_the_share() -> None:
    b = balancer("v3", min_bins_filled=0.3)
    feed(b, [(0, 0), (0, 0), (-1, 0)])
    done = b.flush()
    assert [(n, targets_of(r)) for n, r in done] == [("accel", [(-1, 0), (0, 0)]), ("steer", [(0, 0)])]
    assert b.flush() == []


def test_v1_combinations_round_robin() -> None:
    b = balancer("v1")
    combos = [(a, s) for a in (-1, 0, 1) for s in (-1, 0, 1)]
    done = feed(b, combos[:-1] + [combos[0]])  # a duplicate is ignored
    assert done == []
    done = b.add(row(*combos[-1]))
    assert [n for n, _ in done] == ["accel"]
    assert sorted(targets_of(done[0][1])) == sorted(combos)
    assert [n for n, _ in feed(b, combos)] == ["steer"]
    assert [n for n, _ in feed(b, combos)] == ["accel"]


@pytest.mark.parametrize(("version", "expected"), [
    ("v3", [(-1, 0), (0, 0), (1, -1)]),
    ("v4", [(-1, 1), (0, 0), (1, -1)]),  # v4 swapped (-1, 0) for (-1, 1): steering now spread
])
def test_v4_prefers_candidates_that_balance_the_other_outputs(version: str, expected: list) -> None:
    b = balancer(version)
    assert feed(b, [(0, 0), (0, 0), (-1, 0), (-1, 1), (-1, 1)]) == []
    done = b.add(row(1, -1, 1.0))
    assert [(n, targets_of(r)) for n, r in done] == [("accel", expected)]


def test_rows_to_columns_makes_a_valid_sample_set() -> None:
    rows = [row(0.5, -0.5, 1.0), row(-1, 1, 2.0)]
    cols = rows_to_columns(rows)
    schema = SampleSchema(height=2, width=2, frames=1, history=0)
    assert schema.validate_columns(cols) == 2
    assert cols["game_time"].dtype == np.float64 and cols["targets"].shape == (2, 2)


def test_v3_balances_a_skewed_stream() -> None:
    """Mostly straight, full-throttle driving still yields rounds with every bin equally filled."""
    rng = np.random.default_rng(1)
    b = balancer("v3", samples_per_bin=2)
    sent = []
    for i in range(3000):
        a = 1.0 if rng.random() < 0.8 else float(rng.choice([-1.0, 0.0]))
        s = 0.0 if rng.random() < 0.9 else float(rng.choice([-1.0, 1.0]))
        sent += b.add(row(a, s, i / 30))
    assert sent, "no round completed"
    accel_head, steer_head = build_binnings(OUTPUTS)
    for name, rows in sent:
        head = accel_head if name == "accel" else steer_head
        counts = np.bincount([head.bin_of(r["targets"], r["controls"]) for r in rows], minlength=3)
        assert counts.tolist() == [2, 2, 2]


def test_standing_still_left_out_and_setting_off_offered_again() -> None:
    from pipeline.collect.episode import offers

    def row(speed: float, throttle: float) -> dict[str, np.ndarray]:
        return {"speed": np.float32(speed), "targets": np.array([throttle, 0.0], np.float32)}

    assert offers(row(0.1, 0.0), skip_standing=True, setting_off_repeat=3) == 0  # waiting at a light
    assert offers(row(0.1, 0.0), skip_standing=False, setting_off_repeat=3) == 1
    assert offers(row(0.1, -0.5), skip_standing=True, setting_off_repeat=3) == 0  # braking while stopped
    assert offers(row(1.0, 0.8), skip_standing=True, setting_off_repeat=3) == 3  # setting off
    assert offers(row(12.0, 0.8), skip_standing=True, setting_off_repeat=3) == 1  # cruising
    assert offers(row(12.0, -1.0), skip_standing=True, setting_off_repeat=3) == 1  # braking at speed


def moving(accel: float, steer: float, t: float, speed: float) -> dict[str, np.ndarray]:
    return {**row(accel, steer, t), "speed": np.float32(speed)}


@pytest.mark.parametrize(("own_bin", "accel_rows"), [
    (False, [(1, 0, 10.0)]),  # the full-throttle bin is taken: the setting-off tick is lost
    (True, [(1, 0, 10.0), (1, 0, 1.0)]),  # its own bin keeps it
])
def test_setting_off_gets_a_bin_of_its_own(own_bin: bool, accel_rows: list) -> None:
    """Evaluation "(s)": setting off competed with every full-throttle tick for one bin."""
    b = balancer("v3", min_bins_filled=0.3, setting_off_bin=own_bin)
    assert b.add(moving(1, 0, 0.0, speed=10.0)) == []  # cruising: the accel round's full-throttle bin
    assert b.add(moving(1, 0, 0.1, speed=10.0)) == []  # again: the steer round's straight bin
    assert b.add(moving(1, 0, 0.2, speed=1.0)) == []  # setting off
    sent = dict(b.flush())
    assert [(float(r["targets"][0]), float(r["targets"][1]), float(r["speed"])) for r in sent["accel"]] == accel_rows
    assert len(sent["steer"]) == 1


def test_the_setting_off_bin_counts_neither_to_full_nor_to_filled() -> None:
    b = balancer("v3", min_bins_filled=0.3, setting_off_bin=True)
    assert b.add(moving(1, 0, 0.0, speed=1.0)) == []  # only the setting-off bin holds a row ...
    assert b.flush() == []  # ... so the round has 0 of its 3 bins: dropped
    done = feed(b, [(-1, 0), (0, 0), (1, 0)], t0=1.0)  # the three regular bins: complete at once
    assert [(n, targets_of(r)) for n, r in done] == [("accel", [(-1, 0), (0, 0), (1, 0)])]


def test_v4_swaps_beside_a_setting_off_row() -> None:
    b = balancer("v4", setting_off_bin=True)
    assert feed(b, [(0, 0), (0, 0)]) == []  # one in each output's round
    assert b.add(moving(1, 1, 0.3, speed=1.0)) == []  # setting off: the accel round's own bin
    assert b.add(row(0, 0, 0.4)) == []  # no room: v4 weighs a swap, counting the setting-off row's bins
    done = feed(b, [(-1, 0), (1, 0)], t0=2.0)
    assert [n for n, _ in done] == ["accel"]
    assert len(done[0][1]) == 4  # three regular bins and the setting-off row


def test_setting_off_bin_refused_where_it_cannot_work() -> None:
    with pytest.raises(ValueError, match="v3 or v4"):
        BalancingConfig(version="v1", setting_off_bin=True)
    from pipeline.config import Config

    with pytest.raises(ValueError, match="setting_off_repeat = 1"):
        Config.model_validate({"balancing": {"setting_off_bin": True}, "collection": {"setting_off_repeat": 3}})
    cfg = Config.model_validate({"balancing": {"setting_off_bin": True}, "collection": {"setting_off_repeat": 1}})
    assert cfg.balancing.setting_off_bin
