"""Rasters of the ground: what surface lies where (road, kerb, grass) and how it looks from above.

The cameras never draw roads as geometry: they look up this pre-painted top-down texture
through a homography, so the per-frame cost does not depend on how many roads there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.games.sim.roads import RoadNetwork, rng_for

GRASS, ROAD, SIDEWALK = 0, 1, 2
_SHIFT = 2  # sub-pixel bits for cv2 drawing
_SIDEWALK_M = 3.6
_KERB_M = 0.35

COLOURS = {
    "grass": (82, 112, 54),
    "asphalt": (66, 66, 70),
    "highway": (72, 72, 76),
    "sidewalk": (150, 146, 138),
    "kerb": (196, 194, 188),
    "white": (226, 226, 220),
    "yellow": (222, 180, 60),
    "plaza": (128, 124, 116),
}


@dataclass(frozen=True)
class Raster:
    """Maps world metres to raster pixels: column = (x - x0) / res, row = (y - y0) / res."""

    x0: float
    y0: float
    res: float  # metres per pixel
    width: int
    height: int

    @classmethod
    def covering(cls, extent: tuple[float, float, float, float], res: float) -> Raster:
        w = int(math.ceil((extent[2] - extent[0]) / res))
        h = int(math.ceil((extent[3] - extent[1]) / res))
        return cls(extent[0], extent[1], res, w, h)

    def px(self, xy: np.ndarray) -> np.ndarray:
        """World points (n, 2) as fixed-point pixel coordinates for cv2 drawing."""
        p = (xy - np.array([self.x0, self.y0])) / self.res * (1 << _SHIFT)
        return np.round(p).astype(np.int32)

    def thick(self, metres: float) -> int:
        return max(1, int(round(metres / self.res)))


def _offset(pts: np.ndarray, off: float) -> np.ndarray:
    d = np.gradient(pts, axis=0)
    n = np.stack([-d[:, 1], d[:, 0]], axis=1)
    n /= np.maximum(np.hypot(n[:, 0], n[:, 1]), 1e-9)[:, None]
    return pts + n * off


def _trimmed(net: RoadNetwork, ri: int, extra: float = 0.0) -> np.ndarray:
    road = net.roads[ri]
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(road.pts, axis=0).T))])
    keep = (s >= net.node_radius[road.a] + extra) & (s <= s[-1] - net.node_radius[road.b] - extra)
    return road.pts[keep]


def _dashes(pts: np.ndarray, dash: float, period: float) -> list[np.ndarray]:
    if len(pts) < 2:
        return []
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    out = []
    for a in np.arange(period * 0.25, s[-1] - dash, period):
        t = np.linspace(a, a + dash, 3)
        out.append(np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1))
    return out


def paint_surface(net: RoadNetwork, res: float = 0.5) -> tuple[np.ndarray, Raster]:
    """Surface classes per pixel (GRASS/ROAD/SIDEWALK): off-road grip and placement checks."""
    ras = Raster.covering(net.extent, res)
    surf = np.zeros((ras.height, ras.width), np.uint8)
    for road in net.roads:
        if road.kind == "city":
            side = 2 * (road.half_width + _SIDEWALK_M)
            cv2.polylines(surf, [ras.px(road.pts)], False, SIDEWALK, ras.thick(side), cv2.LINE_8, _SHIFT)
    for road in net.roads:
        cv2.polylines(surf, [ras.px(road.pts)], False, ROAD, ras.thick(2 * road.half_width + 0.6), cv2.LINE_8, _SHIFT)
    return surf, ras


def paint_ground(net: RoadNetwork, seed: int, res: float = 0.3) -> tuple[np.ndarray, Raster]:
    """The RGB top-down texture: grass, sidewalks, kerbs, asphalt and lane markings."""
    rng = rng_for(seed, 7)
    ras = Raster.covering(net.extent, res)
    # Grass with low-frequency patches (meadows, dry spots), blown up from a small image.
    small = (ras.height // 64 + 2, ras.width // 64 + 2, 3)
    patches = np.array(COLOURS["grass"], np.float32) + rng.normal(0.0, 1.0, small) * np.array([9.0, 11.0, 6.0])
    tex = cv2.resize(np.clip(patches, 0, 255).astype(np.uint8), (ras.width, ras.height), interpolation=cv2.INTER_CUBIC)
    aa = cv2.LINE_AA
    city = [i for i, r in enumerate(net.roads) if r.kind == "city"]
    for i in city:
        r = net.roads[i]
        cv2.polylines(tex, [ras.px(r.pts)], False, COLOURS["sidewalk"], ras.thick(2 * (r.half_width + _SIDEWALK_M)), aa, _SHIFT)
    for n in range(len(net.nodes)):
        kinds = {net.roads[i].kind for i in net.node_roads[n]}
        if "city" in kinds:
            c = ras.px(net.nodes[n][None])[0]
            cv2.circle(tex, tuple(int(v) for v in c), int(ras.thick(net.node_radius[n] + 2.0)) << _SHIFT, COLOURS["sidewalk"], -1, aa, _SHIFT)
    for r in net.roads:  # kerbs, then asphalt on top
        cv2.polylines(tex, [ras.px(r.pts)], False, COLOURS["kerb"], ras.thick(2 * (r.half_width + _KERB_M)), aa, _SHIFT)
    for r in net.roads:
        colour = COLOURS["highway"] if r.kind == "highway" else COLOURS["asphalt"]
        cv2.polylines(tex, [ras.px(r.pts)], False, colour, ras.thick(2 * r.half_width), aa, _SHIFT)
    for n in range(len(net.nodes)):
        c = ras.px(net.nodes[n][None])[0]
        hw = max(net.roads[i].half_width for i in net.node_roads[n])
        cv2.circle(tex, tuple(int(v) for v in c), int(ras.thick(hw * 1.15)) << _SHIFT, COLOURS["asphalt"], -1, aa, _SHIFT)
    white, yellow = COLOURS["white"], COLOURS["yellow"]
    line = ras.thick(0.15)
    for ri, r in enumerate(net.roads):
        pts = _trimmed(net, ri)
        if len(pts) < 3:
            continue
        if r.kind == "highway":
            for off in (-0.18, 0.18):
                cv2.polylines(tex, [ras.px(_offset(pts, off))], False, yellow, line, aa, _SHIFT)
            for side in (-1, 1):
                edge = _offset(pts, side * (r.half_width - 0.35))
                cv2.polylines(tex, [ras.px(edge)], False, white, ras.thick(0.22), aa, _SHIFT)
                mid = _offset(pts, side * r.lane_width)
                cv2.polylines(tex, [ras.px(d) for d in _dashes(mid, 4.0, 12.0)], False, white, line, aa, _SHIFT)
        else:
            dash, period = (3.0, 7.0) if r.kind == "city" else (4.0, 10.0)
            cv2.polylines(tex, [ras.px(d) for d in _dashes(pts, dash, period)], False, white, line, aa, _SHIFT)
            if r.kind == "outskirts":
                for side in (-1, 1):
                    edge = _offset(pts, side * (r.half_width - 0.3))
                    cv2.polylines(tex, [ras.px(edge)], False, white, line, aa, _SHIFT)
            else:  # zebra crossings at both ends of city streets
                _zebras(tex, ras, net, ri)
    noise = rng.integers(0, 14, (ras.height, ras.width), dtype=np.uint8)
    cv2.subtract(tex, (7.0, 7.0, 7.0, 0.0), dst=tex)
    cv2.add(tex, cv2.cvtColor(noise, cv2.COLOR_GRAY2RGB), dst=tex)
    return tex, ras


def _zebras(tex: np.ndarray, ras: Raster, net: RoadNetwork, ri: int) -> None:
    road = net.roads[ri]
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(road.pts, axis=0).T))])
    for node, at in ((road.a, net.node_radius[road.a] - 3.0), (road.b, s[-1] - net.node_radius[road.b] + 3.0)):
        if len(net.node_roads[node]) < 3:
            continue
        i = int(np.searchsorted(s, at))
        i = min(max(i, 1), len(road.pts) - 2)
        p = road.pts[i]
        d = road.pts[i + 1] - road.pts[i - 1]
        d = d / max(np.hypot(*d), 1e-9)
        n = np.array([-d[1], d[0]])
        stripes = []
        for k in np.arange(-road.half_width + 0.5, road.half_width - 0.3, 1.2):
            a = p + n * k - d * 1.5
            stripes.append(np.stack([a, a + d * 3.0]))
        cv2.polylines(tex, [ras.px(x) for x in stripes], False, COLOURS["white"], ras.thick(0.45), cv2.LINE_AA, _SHIFT)
