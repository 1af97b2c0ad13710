"""One closed loop without the game: the simulator in an X window (another process), captured
by the `screen` backend, an untrained default model predicting, keys injected back via XTEST.

Predictions per second are measured and printed (run with -s to see them), not asserted:
timing is the benchmarks' business. What is asserted is that the loop ran and that the
injected keys reached the game and moved its car.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.games.base import Controls, Environment, load_game
from tests.xwindow import x_display  # noqa: F401 - fixture

TITLE = "Charles Sim (closed loop)"
ROOT = Path(__file__).resolve().parent.parent
PACED_LOOPS = 60  # predictions paced to 30 FPS, as a player drives (~2 s)
LOOPS = 300  # predictions with pacing off: the loop's capacity


def _start_sim(out: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "tests.sim_window", TITLE, str(out), str(seconds)],
        cwd=ROOT, env={**os.environ, "CHARLES_LOG_LEVEL": "WARNING"}, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and select.select([proc.stdout], [], [], deadline - time.monotonic())[0]:
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return proc
        if not line:
            break
    proc.kill()
    pytest.fail(f"the sim window did not start (exit code {proc.poll()})")


def _drive(game: Any, model: Any, predict: Any, context: Any, loops: int) -> dict[str, float]:
    """The player's inner loop, bounded by a count; returns predictions/s and max frame motion."""
    start, n, motion = time.monotonic(), 0, 0.0
    while n < loops and time.monotonic() - start < 60.0:
        _raw, controls = predict(model, context.context(0))
        obs = game.step(controls)
        context.push(obs)
        motion = max(motion, obs.info["frame_motion"])
        n += 1
    return {"n": n, "pps": n / (time.monotonic() - start), "motion": motion}


def test_sim_window_screen_backend_model_keyboard_loop(x_display: str, tmp_path: Path,  # noqa: F811
                                                        record_property: pytest.RecordProperty) -> None:
    torch = pytest.importorskip("torch")
    from pipeline.collect.context import ContextBuilder
    from pipeline.config import load_config
    from pipeline.models import build_model, predict
    from pipeline.wire.schema import ContextSpec

    cfg = load_config()
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)).eval()
    context = ContextBuilder(ContextSpec.from_inputs(cfg.inputs, cfg.game.fps))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the game process needs the other core, as a real game would
    ticks_file = tmp_path / "ticks.json"
    sim = _start_sim(ticks_file, seconds=40.0)
    game = load_game(
        "screen", hood_size=(cfg.game.hood_width, cfg.game.hood_height),
        cinematic_size=(cfg.game.cinematic_width, cfg.game.cinematic_height), fps=cfg.game.fps,
        realtime=False, window=TITLE, key_sender="xtest",
        control={**cfg.control.model_dump(), "output": "keyboard"},
    )
    try:
        game.reset(Environment())
        # 1. keys reach the game: full throttle through the keyboard output for one second.
        throttle_start = time.monotonic()
        while time.monotonic() - throttle_start < 1.0:
            game.step(Controls(1.0, 0.0))
        throttle_end = time.monotonic()
        # 2. the model drives: capture -> context -> predict -> keys. First paced to the
        #    game's 30 FPS as a player runs, then unpaced to see how fast the loop could go.
        context.reset()
        context.push(game.step(Controls()))
        paced = _drive(game, model, predict, context, PACED_LOOPS)
        game.pace = False
        unpaced = _drive(game, model, predict, context, LOOPS)
        model_end = time.monotonic()
    finally:
        torch.set_num_threads(threads)
        game.close()
        sim.terminate()
        sim.wait(timeout=30)
    paced_pps, unpaced_pps = paced["pps"], unpaced["pps"]
    record_property("paced_pps", round(paced_pps, 1))
    record_property("unpaced_pps", round(unpaced_pps, 1))
    print(f"\nclosed loop: paced {paced['n']} predictions at {paced_pps:.1f} PPS; "
          f"unpaced {unpaced['n']} at {unpaced_pps:.1f} PPS")
    ticks = json.loads(ticks_file.read_text())
    throttle = [t for t in ticks if throttle_start <= t["t"] <= throttle_end]
    driven = [t for t in ticks if throttle_end <= t["t"] <= model_end]
    assert sum(t["accel"] == 1.0 for t in throttle) >= 10  # the game saw 'w' held
    assert max(t["speed"] for t in throttle) > 1.0  # ... and its car moved
    assert (paced["n"], unpaced["n"]) == (PACED_LOOPS, LOOPS)  # ran to its counts (rates printed)
    steering_presses = sum(k in ("a", "d") for t in driven for k in t["touched"])
    assert steering_presses > 0  # the model's proportional steering presses reached the game
    assert max(paced["motion"], unpaced["motion"]) > 0.0  # the capture saw the game's picture change
