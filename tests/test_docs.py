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


def test_the_readme_says_how_to_get_charles_on_path_before_it_uses_it() -> None:
    """#5: the README never said to activate .venv, or that `make setup` exists: `charles`,
    `honcho` and `tensorboard` were "command not found" on a plain PATH."""
    text = (ROOT / "README.md").read_text()
    first_use = text.index("\ncharles ")
    for needed in ("make setup", "source .venv/bin/activate", ".venv/bin/charles"):
        assert -1 < text.find(needed) < first_use, needed
    assert "make setup" in text[: text.index("## The roles")]
    assert "setup:" in (ROOT / "Makefile").read_text()


def test_dotenv_falls_back_to_the_checkouts_and_says_which_it_read(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """#5: `.env` was read only from the current folder, and elsewhere the Redis error did not say so."""
    from pipeline import dotenv

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".env").write_text("CHARLES_REDIS_PORT=6999\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CHARLES_ENV_FILE", raising=False)
    monkeypatch.setenv("CHARLES_REDIS_PORT", "")  # recorded, so what load() sets is undone after the test
    monkeypatch.delenv("CHARLES_REDIS_PORT")
    monkeypatch.setattr(dotenv, "CHECKOUT", checkout)
    assert dotenv.load() == (checkout / ".env").resolve()
    import os

    assert os.environ["CHARLES_REDIS_PORT"] == "6999"
    assert dotenv.describe() == f"settings from {(checkout / '.env').resolve()}"
    (elsewhere / ".env").write_text("CHARLES_KEY_PREFIX=here:\n")  # the current folder's comes first
    monkeypatch.setenv("CHARLES_KEY_PREFIX", "")
    monkeypatch.delenv("CHARLES_KEY_PREFIX")
    assert dotenv.load() == (elsewhere / ".env").resolve()
    monkeypatch.setenv("CHARLES_ENV_FILE", str(tmp_path / "none.env"))
    assert dotenv.load() is None
    assert "no .env found" in dotenv.describe() and "none.env" in dotenv.describe()
    monkeypatch.setattr(dotenv, "loaded", None)
