"""The NPC autopilot: the expert the collectors record, recoveries and unstuck manoeuvres included.

Pure pursuit on the route for steering; a speed target from bends ahead, the speed limit
and the car in front; random steering perturbations it then corrects; and, when pinned
against something, a reverse-and-turn manoeuvre, so the data shows how to get free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.games.base import Controls
from pipeline.games.sim.lanes import Route
from pipeline.games.sim.physics import CarSpec, CarState


@dataclass(frozen=True)
class Style:
    """How an NPC drives: pace, cornering, following distance, how often it wobbles."""

    pace: float  # share of the speed limit it aims for
    lateral: float  # m/s^2 it accepts in bends
    brake: float  # m/s^2 it plans to brake with
    headway: float  # s of gap it keeps to the car ahead
    perturb_every: float  # mean seconds between perturbations
    perturb_size: float  # steering offset during a perturbation


STYLES: dict[str, Style] = {
    "calm": Style(0.85, 2.2, 2.5, 2.0, 22.0, 0.22),
    "normal": Style(1.0, 3.0, 3.2, 1.5, 15.0, 0.30),
    "aggressive": Style(1.15, 4.2, 4.5, 0.9, 11.0, 0.38),
}


def style_named(name: str) -> Style:
    if name not in STYLES:
        raise ConfigError(f"environment.npc_style: {name!r} is not one of {sorted(STYLES)}")
    return STYLES[name]


class Autopilot:
    """Decides controls from the car state and the route; owns perturbation and unstuck timers."""

    def __init__(self, style: Style, spec: CarSpec, rng: np.random.Generator, perturbations: bool = True) -> None:
        self.style, self.spec, self.rng = style, spec, rng
        self.perturbations = perturbations
        self.reset(0.0)

    def reset(self, now: float) -> None:
        self._next_perturb = now + float(self.rng.exponential(self.style.perturb_every)) + 3.0
        self._perturb_until = -1.0
        self._perturb = 0.0
        self._slow_s = 0.0
        self._still_s = 0.0
        self._reverse_until = -1.0
        self._reverse_steer = 0.0
        self.attempts = 0

    def stop_reversing(self) -> None:
        """End a reverse manoeuvre early (something is behind)."""
        self._reverse_until = -1.0

    @property
    def perturbing(self) -> bool:
        return self._perturb != 0.0

    def act(
        self,
        car: CarState,
        route: Route,
        at: int,
        gap: float,
        now: float,
        dt: float,
        contact: bool,
        pushing: bool | None = None,
    ) -> tuple[Controls, dict[str, Any]]:
        """Controls for this tick; `at` is the route index nearest the car, `gap` metres to the car ahead.

        `pushing`: whether the throttle applied this tick pushes, when someone else drives
        (None: the NPC drives and its own throttle says); a car standing still because its
        driver does not push is not pinned, so the NPC must not label it with reversing.
        """
        spec, style = self.spec, self.style
        wb = spec.wheelbase
        rear_x = car.x - math.cos(car.heading) * wb / 2
        rear_y = car.y - math.sin(car.heading) * wb / 2
        v = car.speed
        look = min(max(3.5 + 0.55 * abs(v), 5.0), 30.0)
        bend = float(route.curvature[at : at + 12].max()) if at < len(route.xy) - 1 else 0.0
        look = min(look, max(1.6 * wb, 0.6 / max(bend, 1e-3)))  # shorter in tight turns: cut no corners
        j = min(at + int(look / 1.0) + int(wb / 2), len(route.xy) - 1)
        tx, ty = route.xy[j]
        dx, dy = tx - rear_x, ty - rear_y
        c, s = math.cos(car.heading), math.sin(car.heading)
        fwd, left = dx * c + dy * s, -dx * s + dy * c
        alpha = math.atan2(left, fwd)
        ld = max(math.hypot(dx, dy), 1.0)
        delta = math.atan(2.0 * wb * math.sin(alpha) / ld)
        lock = spec.max_steer / (1.0 + (v / 16.0) ** 2)
        steering = -delta / lock
        # Speed: bends ahead (braking in time), the limit, the car in front.
        n_look = int(min(v * v / (2 * style.brake) + 25.0, 140.0))
        seg = slice(at, min(at + n_look, len(route.xy)))
        kap = route.curvature[seg]
        allow = np.minimum(np.sqrt(style.lateral / np.maximum(kap, 1e-4)), route.speed_limit[seg] * style.pace)
        dist = np.arange(len(kap), dtype=np.float64)
        v_des = float(np.min(np.sqrt(allow**2 + 2 * style.brake * dist))) if len(kap) else 5.0
        v_des = min(v_des, math.sqrt(2 * style.brake * max(gap - 4.0 - style.headway * max(v, 0.0), 0.0)))
        drag = spec.power / spec.top_speed**3
        ff = (drag * v * v + 0.15 * spec.mass) * max(v, 4.0) / spec.power
        err = v_des - v
        throttle = ff + 0.5 * err if err > -0.8 else 0.3 * err
        info: dict[str, Any] = {"perturbed": False, "unstucking": False}
        # Stuck: pushing and not moving, or pressed against something.
        if now < self._reverse_until:
            info["unstucking"] = True
            return Controls(-0.7, self._reverse_steer), info
        pushing = throttle > 0.2 if pushing is None else pushing
        if (pushing and abs(v) < 0.4) or (contact and abs(v) < 0.6):
            self._slow_s += dt
        else:
            self._slow_s = 0.0
            if v > 3.0:
                self.attempts = 0
        self._still_s = self._still_s + dt if abs(v) < 0.3 else 0.0
        if (self._slow_s > 1.0 and gap > 8.0) or self._still_s > 25.0:  # pinned, or boxed in for long
            self._slow_s = self._still_s = 0.0
            self.attempts += 1
            self._reverse_until = now + float(self.rng.uniform(1.0, 2.2)) + 0.3 * min(self.attempts, 4)
            self._reverse_steer = float(np.clip(math.copysign(1.0, alpha) * self.rng.uniform(0.6, 1.0), -1, 1))
            info["unstucking"] = True
            return Controls(-0.7, self._reverse_steer), info
        # Perturbations: a short wrong steering input the pursuit then recovers from.
        info["expert"] = (float(np.clip(throttle, -1, 1)), float(np.clip(steering, -1, 1)))  # what it would do
        if self.perturbations and v > 4.0:
            if now >= self._next_perturb:
                self._perturb = float(self.rng.choice([-1.0, 1.0]) * self.rng.uniform(0.5, 1.0) * style.perturb_size)
                self._perturb_until = now + float(self.rng.uniform(0.3, 0.9))
                self._next_perturb = now + float(self.rng.exponential(style.perturb_every)) + 2.0
            if now < self._perturb_until:
                tight = 0.6 if route.speed_limit[at] < 15.0 else 1.0  # city streets leave less room
                steering += tight * self._perturb / (1.0 + (v / 20.0) ** 2)
                info["perturbed"] = True
            else:
                self._perturb = 0.0
        return Controls(float(np.clip(throttle, -1, 1)), float(np.clip(steering, -1, 1))), info
