"""The built-in simulator as a "real game" for the closed-loop test: a window and a keyboard.

Run as `python -m tests.sim_window TITLE OUT.json SECONDS`. It shows the sim's hood view in
an X window at 30 FPS and drives the sim from the keys that window receives (w/s/a/d),
as a keyboard-driven game does: a key counts for a tick when it was down at any time
during that tick, so a short proportional-steering press still steers. On exit it writes
one record per tick (monotonic time, controls, speed, key events) to OUT.json.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from Xlib import XK, X

from pipeline.games.base import Controls, Environment
from pipeline.games.sim import SimGame
from pipeline.log import configure_logging
from tests.xwindow import ImageWindow

W, H = 320, 240
DRIVE_KEYS = ("w", "s", "a", "d")


def main(title: str, out_path: str, seconds: float) -> None:
    configure_logging("sim-window")  # logs to stderr: stdout carries the "ready" line
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    sim = SimGame(hood_size=(W, H), realtime=True, fps=30.0)
    obs = sim.reset(Environment(map_seed=7, episode_seed=1, traffic_density=0.0))
    win = ImageWindow(title, W, H, x=200, y=150)
    win.window.change_attributes(event_mask=X.KeyPressMask | X.KeyReleaseMask | X.ExposureMask)
    win.show(obs.frame)
    win.window.set_input_focus(X.RevertToParent, X.CurrentTime)  # no window manager gives it focus
    win.dpy.sync()
    names = {win.dpy.keysym_to_keycode(XK.string_to_keysym(k)): k for k in DRIVE_KEYS}
    held: set[str] = set()
    ticks: list[dict[str, object]] = []
    end = time.monotonic() + seconds
    print("ready", flush=True)
    while not stop[0] and time.monotonic() < end:
        touched: set[str] = set()
        events = 0
        while win.dpy.pending_events():
            event = win.dpy.next_event()
            key = names.get(getattr(event, "detail", None))
            if key is None or event.type not in (X.KeyPress, X.KeyRelease):
                continue
            events += 1
            touched.add(key)
            if event.type == X.KeyPress:
                held.add(key)
            else:
                held.discard(key)
        active = held | touched
        controls = Controls(float("w" in active) - float("s" in active), float("d" in active) - float("a" in active))
        obs = sim.step(controls)  # paced to 30 FPS by the sim itself
        win.show(obs.frame)
        ticks.append({"t": time.monotonic(), "accel": controls.acceleration_braking,
                      "steer": controls.steering, "speed": obs.speed, "events": events,
                      "touched": sorted(touched)})
    with open(out_path, "w") as fh:
        json.dump(ticks, fh)
    win.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
