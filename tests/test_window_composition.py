"""scripts/window_composition.py: each version's window is the episodes of the span before it, read
from the collectors' `episode_done` lines; the shares and correlations are exact on known data."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0


def _episode(at_s: float, car: str, traffic: float, model_ticks: int, environment: bool = True) -> str:
    row = {"episode": "e", "ticks": 100, "model_ticks": model_ticks, "event": "episode_done", "role": "collector",
           "timestamp": datetime.fromtimestamp(T0 + at_s, UTC).isoformat().replace("+00:00", "Z")}
    if environment:
        row["environment"] = {"map_seed": 1, "weather": "rain", "time_of_day": 12.0, "car": car,
                              "traffic_density": traffic, "spawn": None, "episode_seed": 0, "npc_style": "normal"}
    return "12:00:00 collector.1 | " + json.dumps(row)


def _version(number: int, at_s: float, ratio: float, speed: float) -> dict[str, object]:
    return {"version": number, "created": T0 + at_s, "ratio_to_npc": ratio, "metrics": {"mean_speed_mps": speed}}


def test_windows_hold_the_episodes_of_the_span_before_each_version(tmp_path: Path) -> None:
    (tmp_path / "supervise.log").write_text("\n".join([
        "not json at all",
        _episode(1090, "truck", 1.0, 0),      # before v1's span (1200 - 100 s = 1100): in no window
        _episode(1150, "truck", 0.9, 0),      # in v1's span
        _episode(1180, "sedan", 0.1, 50),     # in v1's span
        _episode(1190, "sedan", 0.5, 0, environment=False),  # an old log line without its environment: left out
        _episode(1290, "truck", 0.2, 100),    # in v2's span
        _episode(1310, "sedan", 0.6, 0),      # after v2: in v3's span
        _episode(1390, "sedan", 0.8, 0),
    ]) + "\n")
    versions = [_version(0, 60, 0.1, 3.0), _version(1, 1200, 0.5, 9.0), _version(2, 1300, 0.8, 11.0),
                _version(3, 1400, 0.6, 10.0)]
    (tmp_path / "evaluation.json").write_text(json.dumps({"t0": T0, "versions": versions}))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "window_composition.py"), str(tmp_path),
                          "--from-min", "10", "--span-s", "100", "--json"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    rows = {r["version"]: r for r in result["versions"]}
    assert sorted(rows) == [1, 2, 3]  # v0 is before minute 10
    assert rows[1]["episodes"] == 2 and rows[1]["window"]["truck"] == 0.5
    assert rows[1]["window"]["traffic"] == pytest.approx((0.9 + 0.1) / 2)
    assert rows[1]["window"]["model_driven"] == pytest.approx(0.25)
    assert rows[2]["episodes"] == 1 and rows[2]["window"]["truck"] == 1.0 and rows[2]["window"]["model_driven"] == 1.0
    assert rows[3]["episodes"] == 2 and rows[3]["window"]["truck"] == 0.0
    expected = float(np.corrcoef([0.5, 1.0, 0.0], [0.5, 0.8, 0.6])[0, 1])
    assert result["correlation"]["truck"]["ratio_to_npc"] == pytest.approx(expected)
    assert result["correlation"]["daylight"]["ratio_to_npc"] is None  # every episode at noon: nothing to correlate
