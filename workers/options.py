"""Options several commands share, declared once so they read and check the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def config_option(help: str = "TOML run config (default: configs/default.toml)") -> Callable[[Any], Any]:
    """`--config FILE`: an existing file, passed on as a Path in `config_path`."""
    return click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        default=None, help=help)
