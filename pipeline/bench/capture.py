"""`charles bench capture`: screen grab + resize to the hood size, at 800x600 and 1280x720.

The real backends grab one frame per step, so grab + resize must stay far below the
33 ms of a 30 FPS step. Without a desktop (DISPLAY unset) it measures under a private
Xvfb; the published anchor is ~0.14 ms per 800x600 grab with mss under Xvfb.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import structlog

from pipeline.bench import result, timed
from pipeline.config import GameConfig, load_config
from pipeline.errors import ConfigError

log = structlog.get_logger(__name__)

SIZES: tuple[tuple[int, int], ...] = ((800, 600), (1280, 720))


def _hood_size(config_path: str | None) -> tuple[int, int]:
    try:
        game = load_config(config_path).game
    except ConfigError:
        if config_path:
            raise
        game = GameConfig()  # no default config file yet: the schema's defaults
    return game.hood_width, game.hood_height


def run(config_path: str | None = None, seconds: float = 10.0, **_: Any) -> dict[str, Any]:
    """Grabs/s of grab + resize at 1280x720 (the value), with ms figures for both sizes."""
    import mss

    from pipeline.games.capture import ScreenCapture
    from pipeline.games.xvfb import virtual_display

    hood = _hood_size(config_path)
    own_display = not os.environ.get("DISPLAY")
    per_figure = max(seconds / (2 * len(SIZES)), 0.05)
    details: dict[str, Any] = {"resize_to": list(hood), "mss": mss.__version__}
    with virtual_display(1920, 1080) if own_display else nullcontext(os.environ["DISPLAY"]) as display:
        details["display"] = f"Xvfb {display} (started by the benchmark)" if own_display else display
        for w, h in SIZES:
            cap = ScreenCapture(hood, region=(0, 0, w, h))
            try:
                cap.grab()  # open the connection and locate the region outside the timing
                n, elapsed = timed(cap.grab_raw, per_figure)
                details[f"ms_grab_{w}x{h}"] = round(1000 * elapsed / n, 4)
                n, elapsed = timed(cap.grab, per_figure)
                details[f"ms_grab_resize_{w}x{h}"] = round(1000 * elapsed / n, 4)
                if (w, h) == SIZES[-1]:
                    details["iterations"] = n
                    value = n / elapsed
            finally:
                cap.close()
    log.info("bench.capture", **details)
    return result(name="capture", value=value, unit="grabs/s", ceiling=None, details=details)
