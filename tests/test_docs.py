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


def _readme_commands() -> list[list[str]]:
    """Every `charles ...` line of the README's sh code blocks, as argv (comments dropped)."""
    import re
    import shlex

    commands = []
    for block in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("charles "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_every_charles_command_in_the_readme_exists_with_its_flags() -> None:
    """#9: README commands and flags that the code does not have (e.g. an option of another command)."""
    import click

    from pipeline.cli import main

    commands = _readme_commands()
    assert len(commands) >= 15
    problems = []
    for argv in commands:
        ctx = click.Context(main)
        cmd: click.Command | None = main
        words = list(argv)
        while isinstance(cmd, click.Group) and words and not words[0].startswith("-"):
            cmd = cmd.get_command(ctx, words.pop(0))
        if cmd is None or cmd.help == "Not built yet.":
            problems.append(f"charles {' '.join(argv)}: no such command")
            continue
        flags = {opt for p in cmd.params for opt in [*p.opts, *p.secondary_opts]}
        problems += [f"charles {' '.join(argv)}: no flag {w.split('=')[0]}" for w in words
                     if w.startswith("--") and w.split("=")[0] not in flags]
    assert not problems, problems


def test_every_charles_command_in_the_readme_starts(tmp_path: Path) -> None:
    """#9: each README command gets as far as its --help in a scratch folder (its module imports,
    its options parse), within a short timeout."""
    import os
    import sys

    seen = set()
    for argv in _readme_commands():
        path = [w for w in argv if not w.startswith("-")][:2]
        path = path[:2] if path[:1] in (["record"], ["data"], ["bench"]) else path[:1]
        if tuple(path) in seen:
            continue
        seen.add(tuple(path))
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *path, "--help"], cwd=tmp_path, text=True,
                              capture_output=True, timeout=60,
                              env={**os.environ, "CHARLES_ENV_FILE": str(tmp_path / "no.env")})
        assert done.returncode == 0 and "Usage:" in done.stdout, (path, done.stderr[-2000:])


def test_script_flags_in_the_docs_exist() -> None:
    """#9: the README showed `scripts/train_default.py --dagger-rounds 1`, an option of its `all`
    command, not of the script itself."""
    import importlib.util
    import re
    import shlex
    import sys

    import click

    problems = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for span in re.findall(r"`(scripts/[a-z_]+\.py[^`]*)`", doc.read_text()):
            script, *words = shlex.split(span.replace("...", ""))
            if not any(w.startswith("--") for w in words):
                continue
            spec = importlib.util.spec_from_file_location(f"doc_{Path(script).stem}", ROOT / script)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[module.__name__] = module  # dataclasses look their module up
            try:
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            finally:
                del sys.modules[module.__name__]
            cmd = getattr(module, "cli", None) or getattr(module, "main", None)
            if not isinstance(cmd, click.Command):
                continue  # argparse scripts: not checked here
            while isinstance(cmd, click.Group) and words and not words[0].startswith("-"):
                cmd = cmd.get_command(click.Context(cmd), words.pop(0))
            if isinstance(cmd, click.Group):
                problems.append(f"{doc.name}: `{span}` names no command of the group")
                continue
            flags = {opt for p in cmd.params for opt in p.opts}  # type: ignore[union-attr]
            problems += [f"{doc.name}: `{span}`: no {w}" for w in words if w.startswith("--") and w not in flags]
    assert not problems, problems
