"""`charles bench`: `--profile FILE` runs the target under py-spy and keeps its stacks;
`--markdown FILE` writes the results as a table for the docs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_profile_records_the_target_s_stacks(tmp_path: Path) -> None:
    out = tmp_path / "model.txt"
    done = _bench("model", "--seconds", "2", "--json", "--profile", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert result["name"] == "model" and result["value"] > 0
    stacks = out.read_text().splitlines()
    assert sum(int(line.rsplit(" ", 1)[1]) for line in stacks) > 100  # samples
    assert any("DrivingModel.forward (pipeline/models/model.py" in line for line in stacks)


def test_profile_refuses_an_unknown_format_and_all(tmp_path: Path) -> None:
    done = _bench("model", "--profile", str(tmp_path / "p.html"))
    assert done.returncode == 2 and "*.svg | *.json | *.txt" in done.stderr
    done = _bench("all", "--profile", str(tmp_path / "p.txt"))
    assert done.returncode == 2 and "one target" in done.stderr


def test_markdown_table_of_a_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    done = _bench("model", "--seconds", "1", "--json", "--markdown", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    header, rule, row = out.read_text().splitlines()
    assert header.startswith("| target | value |") and rule.startswith("| ---")
    assert row.startswith(f"| `model` | {result['value']} | samples/s |") and result["details"]["machine"]["date"] in row
