"""Options and error handling several commands share, declared once so they read and check the same everywhere."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from pipeline.errors import CharlesError


def config_option(help: str = "TOML run config (default: configs/default.toml)") -> Callable[[Any], Any]:
    """`--config FILE`: an existing file, passed on as a Path in `config_path`."""
    return click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        default=None, help=help)


@contextmanager
def user_errors(prefix: str = "") -> Iterator[None]:
    """A CharlesError (a config, file or flag the user gave) as click's one line, exit 1."""
    try:
        yield
    except CharlesError as exc:
        raise click.ClickException(f"{prefix}{exc}") from None


def out_option(required: bool = True) -> Callable[[Any], Any]:
    """`--out DIR`: a data directory, passed on as a Path in `out_dir`."""
    return click.option("--out", "out_dir", type=click.Path(path_type=Path), required=required, help="data directory")


def budget_option() -> Callable[[Any], Any]:
    """`--budget-gb GB`, passed on in bytes as `budget_bytes` (None: no budget)."""
    return click.option("--budget-gb", "budget_bytes", type=click.FloatRange(min=0, min_open=True), default=None,
                        callback=lambda _ctx, _param, gb: None if gb is None else int(gb * 2**30),
                        help="delete the oldest chunks past this size, GB")
