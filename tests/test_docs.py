"""What a newcomer reads and gets: the checkout ignores what the README's commands write (issue 18)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

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


def _readme_lines() -> list[str]:
    """Every line of the README's sh code blocks that runs `charles` (comments dropped)."""
    import re

    lines = []
    for block in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            words = line.split()
            while words and "=" in words[0]:  # VAR=value charles ...
                words.pop(0)
            if words[:1] == ["charles"]:
                lines.append(line)
    return lines


def _readme_commands() -> list[list[str]]:
    """Every `charles ...` command of the README's sh code blocks, as argv after `charles`."""
    import shlex

    commands = []
    for line in _readme_lines():
        words = shlex.split(line)
        commands.append(words[words.index("charles") + 1:])
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


#: What each README command does when run as written in a scratch folder (the checkout's
#: configs/ and models/ beside it) with no Redis and no display: it runs until it is
#: stopped, or it says in one line what it needs. Keyed by its first words.
RUNS, CTRL_C, DONE = "runs until SIGTERM, then exits 0", "runs until Ctrl-C", "does its work and exits 0"
BOUNDED = "does its work and exits 0, in about the test's start time"  # finished or not by then: waited for
README_STARTS: dict[str, str] = {
    "dashboard": RUNS,  # Redis being away is shown on the page
    "console": RUNS,
    "status": "cannot reach Redis",
    "tensorboard": RUNS,
    "sim --record": BOUNDED,
    "sim --weights": "needs a display",
    "sim --keyboard": "needs a display",
    "record drive --out data/human": "needs a display",
    "bench sim": "Aborted!",  # Ctrl-C: click's one line
    "record streams": RUNS,  # waits for Redis
    "record drive --out data/drives": RUNS,
    "record import-seed004": "does not exist",
    "record info": "does not exist",
    "train": "does not exist",
    "push": "does not exist",
    "export": "cannot reach Redis",
    "collector": RUNS,  # waits for Redis
    "player": RUNS,
    "credentials add": DONE,  # no Redis: the registry only (the user is made at Redis' next start)
    "credentials list": DONE,
    "credentials revoke": "no machine",  # its own scratch folder registered none
}


def test_every_charles_command_in_the_readme_starts(tmp_path: Path) -> None:
    """#9: each README command, as written, in a scratch folder with a short timeout: a command
    that runs is still running after START_S and exits 0 on SIGTERM (or Ctrl-C: `charles sim`
    closes its MP4 and prints its summary); one that needs Redis, a display or a file exits
    non-zero with that in one line. Never a traceback. They run side by side."""
    import os
    import signal
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    closed = free_port()  # nothing listens there: no Redis, and never the live one
    started: list[tuple[str, str, subprocess.Popen[bytes], Path]] = []
    try:
        _start_and_check(tmp_path, closed, started, free_port)
    finally:  # nothing outlives the test, whatever failed
        for *_, proc, _ in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _start_and_check(tmp_path: Path, closed: int,
                     started: list[tuple[str, str, subprocess.Popen[bytes], Path]], free_port: Any) -> None:
    import os
    import re
    import shlex
    import signal
    import sys
    import time

    for i, line in enumerate(_readme_lines()):
        key = next((k for k in sorted(README_STARTS, key=len, reverse=True)
                    if re.search(rf"\bcharles {re.escape(k)}(\s|$)", line)), None)
        assert key is not None, f"README command {line!r}: say in README_STARTS what it does here"
        scratch = tmp_path / f"cmd{i}"
        scratch.mkdir()
        for name in ("configs", "models"):
            (scratch / name).symlink_to(ROOT / name)
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env.update(CHARLES_ENV_FILE=str(scratch / "no.env"), CHARLES_REDIS_URL=f"redis://:x@127.0.0.1:{closed}/0",
                   CHARLES_DASHBOARD_PORT=str(free_port()),  # a `make run` beside the tests keeps 8000
                   CHARLES_TENSORBOARD_PORT=str(free_port()), PYTHONUNBUFFERED="1")
        words = shlex.split(line)
        while "=" in words[0]:  # the README's own variables, placeholders filled, pointed at no Redis
            name, value = words.pop(0).split("=", 1)
            env[name] = re.sub(r"@[^/]+/", f"@127.0.0.1:{closed}/", re.sub(r"<[^>]+>", "x", value))
        with (scratch / "out.txt").open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *words[1:]], cwd=scratch, env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        started.append((line, README_STARTS[key], proc, scratch / "out.txt"))
    start_s = 25.0  # side by side on two shared cores, torch imports included
    deadline = time.monotonic() + start_s
    while time.monotonic() < deadline and any(p.poll() is None and e not in (RUNS, CTRL_C, BOUNDED, "Aborted!")
                                              for _, e, p, _ in started):
        time.sleep(0.5)
    time.sleep(max(0.0, deadline - time.monotonic()))
    running = {line: p.poll() is None for line, _, p, _ in started}
    for _, expected, proc, _ in started:
        if proc.poll() is None and expected != BOUNDED:  # a bounded one is left to finish
            proc.send_signal(signal.SIGTERM if expected == RUNS else signal.SIGINT)
    problems = []
    for line, expected, proc, log in started:
        try:
            code = proc.wait(120 if expected == BOUNDED else 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        text = log.read_text(errors="replace")
        last = text.strip().splitlines()[-1] if text.strip() else ""
        if "Traceback" in text:
            problems.append(f"{line}: a traceback:\n{text[-1500:]}")
        elif expected in (RUNS, CTRL_C):
            if not running[line] or code != 0:
                problems.append(f"{line}: expected to run, then exit 0 when stopped; running={running[line]} "
                                f"exit={code}: {last[:300]}")
        elif expected in (DONE, BOUNDED):
            if code != 0:
                problems.append(f"{line}: expected to finish with exit 0; exit={code}: {last[:300]}")
        elif expected == "Aborted!":  # a bench: stopped by Ctrl-C, or on an idle machine done before it
            stopped = running[line] and code == 1 and last == "Aborted!"
            if not stopped and not (code == 0 and last.startswith("{")):
                problems.append(f"{line}: expected to run until Ctrl-C or print its JSON; exit={code}: {last[:300]}")
        elif running[line] or code == 0 or not last.startswith("Error: ") or expected not in last:
            problems.append(f"{line}: expected one line 'Error: ...{expected}...'; exit={code}: {last[:300]}")
    assert not problems, "\n".join(problems)
    sim = next(p for line, e, _, p in started if e == BOUNDED)
    assert '"ended": "time"' in sim.read_text() and (sim.parent / "drive.mp4").stat().st_size > 0


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
