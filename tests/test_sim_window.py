"""`charles sim --keyboard` and `charles record drive --driver human` in a real window.

Each command runs as its own process on a private Xvfb (SDL's x11 driver, pygame); the test
finds its window with `xdotool search --sync`, holds keys in it with `xdotool keydown/keyup
--window`, and reads what happened from the process's own output: the JSON summary line
`charles sim` prints at exit, and the chunks the recording wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.games.base import Controls
from pipeline.games.sim.viewer import KeyboardDriver
from tests.xwindow import x_display  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent


# -- without a window -----------------------------------------------------------------------


def test_keyboard_driver_full_throttle_steering_builds_up_and_recentres() -> None:
    kb = KeyboardDriver()
    assert kb.controls(set()) == Controls(0.0, 0.0)
    assert kb.controls({"up"}).acceleration_braking == 1.0
    assert kb.controls({"down"}).acceleration_braking == -1.0
    assert kb.controls({"up", "down"}).acceleration_braking == 0.0  # both: they cancel
    steer = [kb.controls({"right"}).steering for _ in range(10)]
    assert steer[0] == pytest.approx(0.12) and steer[-1] == 1.0 and steer == sorted(steer)
    assert kb.controls({"left"}).steering == pytest.approx(0.88)  # turns back at the same rate
    for _ in range(30):
        kb.controls(set())
    assert kb.steer == 0.0  # let go: back to straight


def _cli(args: list[str], env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=timeout)


def test_sim_keyboard_without_pygame_names_the_viewer_extra(tmp_path: Path) -> None:
    (tmp_path / "pygame.py").write_text("raise ImportError('pygame hidden by the test')\n")
    done = _cli(["sim", "--keyboard", "--seconds", "1"], {**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0
    assert "pip install 'charles[viewer]'" in done.stderr, done.stderr


def test_sim_keyboard_without_a_display_says_so() -> None:
    pytest.importorskip("pygame")
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["SDL_VIDEODRIVER"] = "x11"  # never a Wayland session of the machine running the tests
    done = _cli(["sim", "--keyboard", "--seconds", "1"], env)
    assert done.returncode != 0
    assert "needs a display" in done.stderr and "--record" in done.stderr, done.stderr


# -- in a real window on Xvfb ---------------------------------------------------------------


@pytest.fixture
def x_env(x_display: str, tmp_path: Path) -> Iterator[dict[str, str]]:  # noqa: F811
    pytest.importorskip("pygame", reason="pygame missing: pip install -e '.[dev]' (or '.[viewer]')")
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool not installed (apt-get install xdotool)")
    yield {
        **os.environ,
        "DISPLAY": x_display,
        "SDL_VIDEODRIVER": "x11",
        # SDL writes WM_NAME in the locale's encoding: under a UTF-8 locale its type is "UTF-8",
        # which `xdotool search --name` cannot read (window managers read _NET_WM_NAME).
        "LC_ALL": "C",
        "CHARLES_LOG_JSON": "1",
        "CHARLES_ENV_FILE": str(tmp_path / "no.env"),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }


class Driven:
    """A `charles ...` process with a window: find it, hold keys in it, collect its output."""

    def __init__(self, args: list[str], env: dict[str, str], title: str, tmp_path: Path) -> None:
        self.env, self.title = env, title
        self._down: set[str] = set()
        self.err_path = tmp_path / f"{title.replace(' ', '_')}.stderr"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=env,  # noqa: S603
                                     stdout=subprocess.PIPE, stderr=self._err, text=True)
        self.window = self._find_window()

    def _xdotool(self, *args: str, timeout: float = 10.0) -> str:
        done = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True,  # noqa: S603, S607
                              timeout=timeout)
        assert done.returncode == 0, f"xdotool {args}: {done.stderr}"
        return done.stdout

    def _find_window(self) -> str:
        try:  # --sync waits until the window is there: it opens with the first frame
            out = self._xdotool("search", "--sync", "--all", "--pid", str(self.proc.pid),
                                "--name", f"^{self.title}", timeout=90.0)
            window = out.split()[0]
            # No window manager runs under Xvfb to give it the focus. Focused, it gets real key
            # events (xdotool uses XTEST for the focused window), as from a keyboard.
            self._xdotool("windowfocus", "--sync", window)
        except (AssertionError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.finish()
            pytest.fail(f"no window titled {self.title!r} appeared:\n{self.err_path.read_text()[-3000:]}")
        return window

    def hold(self, key: str, seconds: float) -> None:
        self._xdotool("keydown", "--window", self.window, key)
        self._down.add(key)
        time.sleep(seconds)
        self._xdotool("keyup", "--window", self.window, key)
        self._down.discard(key)

    def quit(self) -> None:
        """Press Esc; the window closes at once, so the key is let go after the exit."""
        self._xdotool("keydown", "--window", self.window, "Escape")
        self._down.add("Escape")

    def close_window(self) -> None:
        """What a window manager does on the close button: WM_DELETE_WINDOW to the client."""
        from Xlib import X, display
        from Xlib.protocol import event

        dpy = display.Display(self.env["DISPLAY"])
        try:
            win = dpy.create_resource_object("window", int(self.window))
            protocols, delete = dpy.intern_atom("WM_PROTOCOLS"), dpy.intern_atom("WM_DELETE_WINDOW")
            msg = event.ClientMessage(window=win, client_type=protocols, data=(32, [delete, X.CurrentTime, 0, 0, 0]))
            win.send_event(msg, event_mask=X.NoEventMask)
            dpy.sync()
        finally:
            dpy.close()

    def finish(self, timeout: float = 60.0) -> str:
        """Wait for the exit, let go of any key still down (XTEST keys are server-wide); stdout."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        finally:
            for key in sorted(self._down):
                subprocess.run(["xdotool", "keyup", key], env=self.env, capture_output=True, timeout=10)  # noqa: S603, S607
            self._down.clear()
            self._err.close()
        return out


def _summary(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary on stdout: {stdout!r}"
    return json.loads(lines[-1])


SIM = ["sim", "--keyboard", "--seed", "3", "--episode", "1", "--traffic", "0", "--size", "320x180"]


@pytest.mark.slow
def test_sim_keyboard_up_drives_forward_s_brakes_escape_quits(x_env: dict[str, str], tmp_path: Path) -> None:
    sim = Driven([*SIM, "--seconds", "60"], x_env, "Charles sim", tmp_path)
    sim.hold("Up", 1.0)
    sim.hold("s", 0.4)  # WASD too: S brakes
    time.sleep(0.3)
    sim.quit()
    summary = _summary(sim.finish())
    assert sim.proc.returncode == 0, sim.err_path.read_text()[-3000:]
    assert summary["ended"] == "quit" and summary["game_s"] < 30.0, summary  # Esc, long before 60 s
    held = summary["keys_held_frames"]
    assert held["up"] >= 15 and held["down"] >= 5, summary  # ~30 and ~12 frames at 30 FPS
    assert held["left"] == held["right"] == 0, summary
    assert summary["max_speed"] > 2.0 and summary["forward_m"] > 1.0, summary  # forward, from the keys
    assert summary["distance_m"] == pytest.approx(summary["forward_m"], abs=0.5)  # never reversed


@pytest.mark.slow
def test_sim_keyboard_without_keys_stays_put(x_env: dict[str, str], tmp_path: Path) -> None:
    sim = Driven([*SIM, "--seconds", "2"], x_env, "Charles sim", tmp_path)  # the window is there ...
    summary = _summary(sim.finish())  # ... and nobody touches it
    assert sim.proc.returncode == 0, sim.err_path.read_text()[-3000:]
    assert summary["ended"] == "time" and summary["frames"] == 60, summary
    assert summary["keys_held_frames"] == {"up": 0, "down": 0, "left": 0, "right": 0}, summary
    assert summary["distance_m"] == 0.0 and summary["max_speed"] == 0.0, summary


@pytest.mark.slow
def test_record_drive_human_keys_in_the_window_are_recorded(x_env: dict[str, str], tmp_path: Path) -> None:
    from pipeline.data.chunks import load_chunk, scan

    out = tmp_path / "drives"
    rec = Driven(["record", "drive", "--out", str(out), "--driver", "human", "--seconds", "60",
                  "--map-seed", "3", "--traffic", "0"], x_env, "Charles record", tmp_path)
    time.sleep(0.5)
    rec.hold("Up", 1.0)
    time.sleep(0.5)
    rec.quit()  # ends the recording; what was driven is kept
    summary = _summary(rec.finish())
    assert rec.proc.returncode == 0, rec.err_path.read_text()[-3000:]
    assert 30 <= summary["ticks"] < 60 * 30, summary  # ended by Esc, not by --seconds
    metas = scan(out)
    assert metas and all(m.get("source") == "drive:human" for m in metas)
    cols = [load_chunk(m.data_path) for m in metas]
    accel = np.concatenate([c["actions"] for c in cols])[:, 0]
    speed = np.concatenate([c["speed"] for c in cols])
    assert (accel == 1.0).sum() >= 15, accel  # ~30 ticks of Up at 30 FPS
    assert accel[-5:].tolist() == [0.0] * 5, accel  # let go before Esc
    assert set(np.unique(accel).tolist()) <= {0.0, 1.0}
    assert speed.max() > 2.0  # the throttle moved the car


@pytest.mark.slow
def test_sim_keyboard_closing_the_window_quits(x_env: dict[str, str], tmp_path: Path) -> None:
    sim = Driven([*SIM, "--seconds", "60"], x_env, "Charles sim", tmp_path)
    time.sleep(0.5)
    sim.close_window()
    summary = _summary(sim.finish(timeout=30.0))
    assert sim.proc.returncode == 0, sim.err_path.read_text()[-3000:]
    assert summary["ended"] == "quit" and summary["game_s"] < 30.0, summary


# -- a model drives (issue 18 #10): no Redis, to an MP4 or in a window ----------------------------

SHIPPED = ROOT / "models" / "charles_small_cnn.safetensors"
NO_REDIS = {"CHARLES_REDIS_URL": "redis://127.0.0.1:9/0", "OMP_NUM_THREADS": "1", "CHARLES_LOG_JSON": "1"}


def _still_weights(path: Path) -> Path:
    """The default model with every weight zero: it predicts no throttle and no steering."""
    from pipeline.config import load_config
    from pipeline.models import build_model
    from pipeline.wire.weights import to_blob

    cfg = load_config()
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    path.write_bytes(to_blob({k: v.detach().clone().zero_() for k, v in model.state_dict().items()},
                             {"model": cfg.run.name}))
    return path


def test_sim_weights_records_the_model_driving_without_redis(tmp_path: Path) -> None:
    import cv2

    env = {**os.environ, **NO_REDIS, "CHARLES_ENV_FILE": str(tmp_path / "no.env")}
    drive = ["sim", "--seed", "3", "--episode", "1", "--traffic", "0", "--seconds", "5", "--size", "160x90"]
    done = _cli([*drive, "--weights", str(SHIPPED), "--record", str(tmp_path / "m.mp4")], env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.strip().splitlines()) == 1  # the summary, once
    assert "distance_m" not in done.stderr  # issue 18 #13: it was printed twice, as a log line too
    summary = _summary(done.stdout)
    assert summary["driver"] == "model" and summary["frames"] == 150, summary
    assert summary["distance_m"] > 10.0, summary  # the shipped model sets off and drives
    video = cv2.VideoCapture(str(tmp_path / "m.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 150 and video.get(cv2.CAP_PROP_FRAME_WIDTH) == 160
    assert summary["codec"] in ("h264", "mpeg4")
    if summary["codec"] == "mpeg4":  # issue 18 #13: say that browsers will not play it
        assert '"video_codec"' in done.stderr and "browsers do not" in done.stderr
    still = _cli([*drive, "--weights", str(_still_weights(tmp_path / "still.safetensors")), "--record",
                  str(tmp_path / "s.mp4")], env, timeout=120)
    assert still.returncode == 0, still.stderr[-3000:]
    assert _summary(still.stdout)["distance_m"] < 1.0  # the weights drive, not the NPC


def test_sim_weights_errors_are_one_line(tmp_path: Path) -> None:
    env = {**os.environ, **NO_REDIS, "CHARLES_ENV_FILE": str(tmp_path / "no.env")}
    other = _cli(["sim", "--weights", str(SHIPPED), "--config", "configs/history_lstm.toml", "--record",
                  str(tmp_path / "x.mp4")], env)
    assert other.returncode != 0 and "Traceback" not in other.stderr
    assert "--config configs/default.toml" in other.stderr.strip().splitlines()[-1], other.stderr
    assert not (tmp_path / "x.mp4").exists()
    keyboard = _cli(["sim", "--keyboard", "--weights", str(SHIPPED)], env)
    assert keyboard.returncode == 2 and "--keyboard drives in a window" in keyboard.stderr


@pytest.mark.slow
def test_sim_weights_drives_in_a_window(x_env: dict[str, str], tmp_path: Path) -> None:
    args = ["sim", "--weights", str(SHIPPED), "--seed", "3", "--traffic", "0", "--seconds", "4", "--size", "320x180"]
    sim = Driven(args, {**x_env, **NO_REDIS}, "Charles sim", tmp_path)
    summary = _summary(sim.finish())
    assert sim.proc.returncode == 0, sim.err_path.read_text()[-3000:]
    assert summary["driver"] == "model" and summary["ended"] == "time" and summary["distance_m"] > 5.0, summary


@pytest.mark.slow
def test_a_window_gets_a_private_runtime_dir_when_the_session_has_none(x_display: str,  # noqa: F811
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 #13: SDL warned about XDG_RUNTIME_DIR (ssh, su, containers have none)."""
    pytest.importorskip("pygame")
    from pipeline.games.sim.viewer import SimWindow

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("DISPLAY", x_display)
    monkeypatch.setenv("SDL_VIDEODRIVER", "x11")
    SimWindow((64, 36)).close()
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    assert runtime.is_dir() and runtime.stat().st_mode & 0o777 == 0o700 and runtime.stat().st_uid == os.getuid()
