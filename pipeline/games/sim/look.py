"""How an environment looks: light, sky, haze and rain as a few numbers the renderer applies.

Weather and time of day are cheap colour operations on the rendered frame, so they cost
the same for every environment and never change what the physics sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError
from pipeline.games.base import WEATHERS


def _mix(a: tuple[float, ...] | np.ndarray, b: tuple[float, ...] | np.ndarray, t: float) -> np.ndarray:
    return np.asarray(a, np.float64) * (1 - t) + np.asarray(b, np.float64) * t


def _smooth(e0: float, e1: float, x: float) -> float:
    t = min(max((x - e0) / (e1 - e0), 0.0), 1.0)
    return t * t * (3 - 2 * t)


@dataclass(frozen=True)
class Look:
    """Light and atmosphere for one episode."""

    weather: str
    hours: float
    daylight: float  # 0 night .. 1 noon-ish
    ambient: float  # overall light on surfaces, 0..1
    tint: np.ndarray  # RGB multiplier on lit surfaces
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    fog_colour: np.ndarray
    fog_density: float  # 1/m
    headlights: bool
    rain: bool
    stars: bool
    sun_azimuth: float  # rad, world frame
    sun_elevation: float  # rad

    @classmethod
    def of(cls, weather: str, hours: float) -> Look:
        """The look of a weather at a time of day (hours, any value wraps into 0..24)."""
        if weather not in WEATHERS:
            raise ConfigError(f"environment.weather: {weather!r} is not one of {list(WEATHERS)}")
        hours = float(hours) % 24.0
        elev = math.radians(62.0) * math.sin(math.pi * (hours - 6.0) / 12.0)
        daylight = _smooth(math.radians(-7.0), math.radians(12.0), elev)
        dusk = _smooth(math.radians(-6.0), math.radians(2.0), elev) * (1 - _smooth(math.radians(4.0), math.radians(18.0), elev))
        top = _mix(_mix((6, 9, 24), (62, 120, 210), daylight), (70, 70, 130), dusk * 0.6)
        horizon = _mix(_mix((18, 22, 40), (178, 206, 236), daylight), (244, 150, 86), dusk * 0.8)
        tint = _mix(_mix((0.75, 0.8, 1.0), (1.0, 1.0, 1.0), daylight), (1.1, 0.88, 0.72), dusk * 0.6)
        ambient = 0.09 + 0.91 * daylight
        fog_density = 1 / 1600.0
        fog_colour = horizon * 0.85 + top * 0.15
        if weather == "overcast":
            grey = _mix((14, 15, 18), (156, 160, 166), daylight)
            top, horizon = grey * 0.85, grey * 1.12
            tint, ambient = _mix(tint, (0.95, 0.97, 1.0), 0.7), ambient * 0.78
            fog_density, fog_colour = 1 / 650.0, horizon
        elif weather == "rain":
            grey = _mix((10, 11, 14), (112, 118, 126), daylight)
            top, horizon = grey * 0.8, grey * 1.15
            tint, ambient = _mix(tint, (0.85, 0.92, 1.0), 0.7), ambient * 0.62
            fog_density, fog_colour = 1 / 210.0, horizon
        elif weather == "fog":
            grey = _mix((20, 22, 26), (196, 200, 204), daylight)
            top, horizon = grey, grey
            ambient = ambient * 0.85
            fog_density, fog_colour = 1 / 42.0, grey
        dark = ambient < 0.45 or weather in ("fog", "rain") and ambient < 0.6
        return cls(
            weather=weather, hours=hours, daylight=daylight, ambient=float(ambient),
            tint=np.asarray(tint, np.float64), sky_top=np.clip(top, 0, 255), sky_horizon=np.clip(horizon, 0, 255),
            fog_colour=np.clip(fog_colour, 0, 255), fog_density=fog_density, headlights=bool(dark or daylight < 0.5),
            rain=weather == "rain", stars=daylight < 0.15 and weather == "clear",
            sun_azimuth=math.radians(90.0 - 15.0 * (hours - 12.0)), sun_elevation=elev,
        )

    def fog(self, distance: np.ndarray | float) -> np.ndarray | float:
        """Share of the fog colour at a distance (m)."""
        return 1.0 - np.exp(-np.asarray(distance) * self.fog_density)

    def light_colour(self, colour: np.ndarray, distance: float, extra_light: float = 0.0, shade: float = 1.0) -> tuple[int, int, int]:
        """The on-screen colour of a surface: lit, tinted, shaded, then fogged by distance."""
        light = min(1.0, self.ambient * shade + extra_light * (1 - self.ambient))
        f = float(self.fog(distance))
        c = np.asarray(colour) * self.tint * light * (1 - f) + self.fog_colour * f
        return (int(min(c[0], 255)), int(min(c[1], 255)), int(min(c[2], 255)))


def headlight(fwd: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """How much of the ego car's headlight beams falls on a point (car frame, metres)."""
    f = np.maximum(fwd, 0.0)
    cone = np.exp(-((lat / (0.9 + 0.32 * f)) ** 2))
    fall = 1.0 / (1.0 + (f / 32.0) ** 2)
    return np.where(fwd > 0.0, cone * fall * 0.95, 0.0)
