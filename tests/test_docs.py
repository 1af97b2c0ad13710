"""What a newcomer reads and gets: the checkout ignores what the README's commands write (issue 18)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readmes_data_folders_are_git_ignored() -> None:
    """#13: `charles record drive --out data/human` (the README's) left gigabytes for `git add`."""
    paths = ["data/human/drive-1/ticks-000000.npz", "data/drives/x.json", "drive.mp4", "var/evaluation/r.json"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert sorted(done.stdout.split()) == sorted(paths), done.stdout
