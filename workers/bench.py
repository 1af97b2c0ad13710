"""`charles bench TARGET [--json]`: run benchmarks, print one JSON object per target."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from pipeline.bench import markdown_table
from workers.options import config_option

#: target name -> "module:function"; the function takes keyword options and returns bench.result().
TARGETS: dict[str, str] = {
    "pipeline": "pipeline.bench.pipeline:run",
    "broadcast": "pipeline.bench.broadcast:run",
    "trainer": "pipeline.bench.trainer:run",
    "player": "pipeline.bench.player:run",
    "ddp": "pipeline.bench.ddp:run",
    "model": "pipeline.bench.model:run",
    "capture": "pipeline.bench.capture:run",
    "sim": "pipeline.bench.sim:run",
    "codec": "pipeline.bench.codec:run",
    "fleet": "pipeline.bench.fleet:run",
}


def _run(target: str, options: dict[str, Any]) -> dict[str, Any]:
    module_name, _, fn_name = TARGETS[target].partition(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    return fn(**options)


#: py-spy output format by file extension (raw: collapsed stacks, one line per stack and count)
PROFILE_FORMATS = {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}


def _profiled(argv: list[str], path: str) -> None:
    """Run this same bench under py-spy: a sampling profiler outside the process, so the loop
    runs at full speed and every thread and child process (game, stages) is seen."""
    fmt = PROFILE_FORMATS.get(os.path.splitext(path)[1])
    if fmt is None:
        raise click.UsageError(f"--profile: name the file {' | '.join(f'*{e}' for e in PROFILE_FORMATS)}")
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if spy is None:
        raise click.ClickException("--profile needs py-spy: pip install 'charles[profile]'")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cmd = [spy, "record", "--subprocesses", "--threads", "--rate", "200", "--format", fmt, "--output", path,
           "--", sys.executable, "-m", "pipeline.cli", "bench", *argv]
    sys.exit(subprocess.run(cmd, check=False).returncode)


@click.command(name="bench")
@click.argument("target", type=click.Choice(sorted([*TARGETS, "all"]) or ["all"]))
@click.option("--json", "as_json", is_flag=True, help="print JSON only (one object per line)")
@config_option("config file for targets that take one")
@click.option("--seconds", default=10.0, show_default=True, help="measuring time per figure")
@click.option("--device", default=None, help="cpu | cuda: override the config's device where a target uses one")
@click.option("--collectors", default=0, show_default=True,
              help="fleet: synthetic collectors per shard (0: by the cores)")
@click.option("--rate", default=0.0, show_default=True, help="fleet: sets/s per synthetic collector (0: flat out)")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="run the target under py-spy (all threads and child processes): FILE.svg | .json | .txt")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None,
              help="also write the results as a markdown table to this file")
def cli(target: str, as_json: bool, config_path: Path | None, seconds: float, device: str | None,
        collectors: int, rate: float, profile_path: str | None, markdown_path: str | None) -> None:
    """Measure a stage against its ceiling; `all` runs every target and prints a table (stderr)."""
    from pipeline.log import configure_logging
    from pipeline.observe.progress import progress_bar

    configure_logging("bench")
    if profile_path is not None:
        if target == "all":
            raise click.UsageError("--profile takes one target, not `all`")
        argv = [target, "--seconds", str(seconds), *(["--json"] if as_json else [])]
        argv += [*(["--config", str(config_path)] if config_path else []), *(["--device", device] if device else [])]
        _profiled(argv, profile_path)
        return
    names = sorted(TARGETS) if target == "all" else [target]
    results = []
    with progress_bar("bench", total=len(names), show=None if len(names) > 1 else False) as bar:
        for name in names:
            bar.update(description=f"bench {name}")
            try:
                res = _run(name, {"config_path": config_path, "seconds": seconds, "device": device,
                                  "collectors": collectors, "rate": rate})
            except Exception as exc:  # `all` goes on and says why a target could not run here
                if target != "all":
                    raise
                click.echo(json.dumps({"name": name, "skipped": f"{type(exc).__name__}: {exc}"[:300]}))
                bar.advance()
                continue
            results.append(res)
            click.echo(json.dumps(res))
            bar.advance()
    if target == "all":  # on stderr: with --json, stdout stays one JSON object per line
        from rich.console import Console
        from rich.table import Table

        table = Table("target", "value", "unit", "ceiling", "ratio")
        for res in results:
            table.add_row(res["name"], str(res["value"]), res["unit"], str(res["ceiling"]), str(res["ratio"]))
        Console(stderr=True).print(table)
    if markdown_path is not None:
        with open(markdown_path, "w", encoding="utf-8") as fh:
            fh.write(markdown_table(results))
