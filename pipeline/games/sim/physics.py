"""The ego car: a kinematic bicycle with power, drag, brakes, reverse, grip and steering rate.

Plain-float arithmetic on purpose: one car per step, so scalar math beats numpy here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

G = 9.81


@dataclass(frozen=True)
class CarSpec:
    """What differs between car types: mass, power, steering, grip, size."""

    mass: float  # kg
    power: float  # W at the wheels
    top_speed: float  # m/s (sets the drag)
    wheelbase: float  # m
    length: float
    width: float
    height: float
    max_steer: float  # rad at the wheels
    steer_rate: float  # rad/s at the wheels
    grip: float  # tyre friction coefficient on asphalt
    brake: float  # m/s^2 at full brake
    reverse_top: float  # m/s
    colour: tuple[int, int, int]


CARS: dict[str, CarSpec] = {
    "sedan": CarSpec(1450, 115e3, 52.0, 2.70, 4.6, 1.85, 1.45, 0.58, 1.5, 1.00, 8.5, 8.0, (170, 30, 34)),
    "sports": CarSpec(1300, 290e3, 78.0, 2.50, 4.4, 1.90, 1.20, 0.55, 2.0, 1.15, 10.5, 8.0, (235, 190, 20)),
    "truck": CarSpec(3600, 180e3, 34.0, 3.70, 6.2, 2.25, 2.60, 0.52, 1.0, 0.80, 6.5, 6.0, (40, 80, 160)),
}


@dataclass
class CarState:
    """Pose and motion of a car; speed is signed along the heading."""

    x: float = 0.0
    y: float = 0.0
    heading: float = 0.0
    speed: float = 0.0
    steer: float = 0.0  # wheel angle, rad, + = right
    odometer: float = 0.0


def step(car: CarState, spec: CarSpec, throttle: float, steering: float, dt: float, grip_scale: float = 1.0, drag_extra: float = 0.0) -> None:
    """Advance `car` by dt under combined throttle/brake and steering commands in [-1, 1].

    Negative throttle brakes while rolling forward and reverses once stopped; positive
    throttle brakes while rolling backward. `grip_scale` < 1 and `drag_extra` model
    grass and wet roads.
    """
    throttle = min(max(throttle, -1.0), 1.0)
    steering = min(max(steering, -1.0), 1.0)
    v = car.speed
    # Steering: the wheels turn at a finite rate; less lock at speed, as drivers do.
    lock = spec.max_steer / (1.0 + (v / 16.0) ** 2)
    target = steering * lock
    delta = target - car.steer
    max_d = spec.steer_rate * dt
    car.steer += min(max(delta, -max_d), max_d)

    drag_c = spec.power / spec.top_speed**3
    traction = spec.grip * grip_scale * G * 0.55
    if throttle > 0.0 and v >= -0.3:
        force = throttle * spec.power / max(abs(v), 4.0)
        acc = min(force / spec.mass, throttle * traction)
    elif throttle > 0.0:  # rolling backwards: brake
        acc = throttle * spec.brake * grip_scale
    elif throttle < 0.0 and v > 0.3:
        acc = throttle * spec.brake * grip_scale
    elif throttle < 0.0:  # stopped or reversing: drive backwards
        acc = throttle * min(3.5, traction) if v > -spec.reverse_top else 0.0
    else:
        acc = 0.0
    resist = drag_c * v * abs(v) / spec.mass + (0.15 + drag_extra) * (1 if v > 0 else -1 if v < 0 else 0)
    resist += 0.25 * drag_extra * v
    new_v = v + (acc - resist) * dt
    braking = (throttle < 0.0 < v) or (throttle > 0.0 > v) or throttle == 0.0
    if braking and (v > 0.0 > new_v or v < 0.0 < new_v):
        new_v = 0.0  # brakes and rolling resistance stop the car, they never reverse it
    if throttle == 0.0 and abs(new_v) < 0.05:
        new_v = 0.0
    car.speed = new_v
    # Yaw from the bicycle model, capped by what the tyres can hold.
    vm = 0.5 * (v + new_v)
    yaw = -vm * math.tan(car.steer) / spec.wheelbase
    lat_max = spec.grip * grip_scale * G
    if abs(vm * yaw) > lat_max:
        yaw = math.copysign(lat_max / max(abs(vm), 1e-6), yaw)
    mid = car.heading + 0.5 * yaw * dt
    car.x += vm * math.cos(mid) * dt
    car.y += vm * math.sin(mid) * dt
    car.heading = (car.heading + yaw * dt + math.pi) % (2 * math.pi) - math.pi
    car.odometer += abs(vm) * dt


def circles(car: CarState, spec: CarSpec) -> tuple[list[float], list[float], float]:
    """Three circles along the car that stand in for its body in collisions."""
    r = spec.width / 2
    off = spec.length / 2 - r
    c, s = math.cos(car.heading), math.sin(car.heading)
    return [car.x - c * off, car.x, car.x + c * off], [car.y - s * off, car.y, car.y + s * off], r
