"""The untrusted-machine fuzz run, short: `scripts/fuzz_untrusted.py` for 30 s against a real
system (Redis with the project's ACL lines, server, trainer, two honest collectors and a
player, each honest machine with a user of its own) while a collector and a player user
attack. The 10-minute run and its figures: docs/security.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.slow


def test_a_short_fuzz_run_leaves_every_role_running_and_loses_no_honest_set(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz_untrusted.py"), "--seconds", "30",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=400, cwd=ROOT)
    result = json.loads(res.stdout)
    assert result["ok"] and res.returncode == 0, json.dumps(result["checks"]) + res.stderr[-2000:]
    for name in ("mallory", "eve"):
        attacks = result["attacks"][name]
        assert attacks["tried"] > 50 and attacks["refused"] > 0 and attacks["violations"] == []
    assert sum(result["published"].values()) > 0
