"""Roadside things you can hit: buildings, trees, street lights and barriers.

One struct-of-arrays table serves both the renderer (cull, sort, draw as boxes and
billboards) and the physics (a grid of candidates per cell, tested as circles and boxes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.games.sim.roads import Road, RoadNetwork, rng_for
from pipeline.games.sim.surface import GRASS, Raster

BUILDING, TREE, POLE, BARRIER = 0, 1, 2, 3
_CELL = 16.0
_REACH = 4.0  # the longest car's half length plus a margin

_FACADES = np.array([
    (168, 160, 150), (190, 180, 160), (140, 130, 124), (120, 126, 138), (176, 150, 126),
    (150, 160, 166), (200, 196, 186), (130, 110, 96), (104, 108, 116), (186, 170, 140),
], np.float64)


@dataclass
class Obstacles:
    """Every static obstacle; boxes use (hl, hw, ang), round things use radius hw."""

    kind: np.ndarray
    x: np.ndarray
    y: np.ndarray
    hl: np.ndarray
    hw: np.ndarray
    ang: np.ndarray
    height: np.ndarray
    colour: np.ndarray  # (n, 3) RGB
    crown: np.ndarray  # tree crown radius (m); 0 for others
    bound: np.ndarray  # radius of a circle that holds the footprint

    def __len__(self) -> int:
        return len(self.x)

    def build_grid(self, extent: tuple[float, float, float, float]) -> None:
        """Bucket obstacles into cells, each padded by a car's reach, for one-cell queries."""
        self.gx0, self.gy0 = extent[0], extent[1]
        self.gw = int((extent[2] - extent[0]) / _CELL) + 2
        self.gh = int((extent[3] - extent[1]) / _CELL) + 2
        cells: list[list[int]] = [[] for _ in range(self.gw * self.gh)]
        for i in range(len(self)):
            r = self.bound[i] + _REACH
            x0 = max(int((self.x[i] - r - self.gx0) / _CELL), 0)
            x1 = min(int((self.x[i] + r - self.gx0) / _CELL), self.gw - 1)
            y0 = max(int((self.y[i] - r - self.gy0) / _CELL), 0)
            y1 = min(int((self.y[i] + r - self.gy0) / _CELL), self.gh - 1)
            for cy in range(y0, y1 + 1):
                for cx in range(x0, x1 + 1):
                    cells[cy * self.gw + cx].append(i)
        self.cells = [np.array(c, dtype=np.int64) for c in cells]

    def near(self, x: float, y: float) -> np.ndarray:
        cx = min(max(int((x - self.gx0) / _CELL), 0), self.gw - 1)
        cy = min(max(int((y - self.gy0) / _CELL), 0), self.gh - 1)
        return self.cells[cy * self.gw + cx]

    def push_out(self, cx: np.ndarray, cy: np.ndarray, r: float) -> tuple[float, float, bool]:
        """Push (dx, dy) that separates circles (cx, cy, radius r) from nearby obstacles."""
        idx = self.near(float(cx[1]), float(cy[1]))
        if len(idx) == 0:
            return 0.0, 0.0, False
        ox, oy = self.x[idx][:, None], self.y[idx][:, None]
        ca, sa = np.cos(self.ang[idx])[:, None], np.sin(self.ang[idx])[:, None]
        dx, dy = cx[None] - ox, cy[None] - oy
        lx, ly = dx * ca + dy * sa, -dx * sa + dy * ca
        hl, hw = self.hl[idx][:, None], self.hw[idx][:, None]
        box = (self.kind[idx] == BUILDING) | (self.kind[idx] == BARRIER)
        box = box[:, None]
        qx = np.where(box, np.clip(lx, -hl, hl), 0.0)
        qy = np.where(box, np.clip(ly, -hw, hw), 0.0)
        ex, ey = lx - qx, ly - qy
        dist = np.hypot(ex, ey)
        reach = np.where(box, r, r + hw)
        pen = reach - dist
        hit = pen > 0
        if not hit.any():
            return 0.0, 0.0, False
        inside = dist < 1e-6
        # Inside a box: leave along the nearest face.
        fx = np.where(np.abs(hl - np.abs(lx)) < np.abs(hw - np.abs(ly)), np.sign(lx), 0.0)
        fy = np.where(fx == 0.0, np.sign(ly) + (ly == 0), 0.0)
        nx = np.where(inside, fx, ex / np.maximum(dist, 1e-6))
        ny = np.where(inside, fy, ey / np.maximum(dist, 1e-6))
        depth = np.where(inside, np.minimum(hl - np.abs(lx), hw - np.abs(ly)) + r, pen)
        wx, wy = nx * ca - ny * sa, nx * sa + ny * ca
        k = np.unravel_index(np.argmax(np.where(hit, depth, -1.0)), depth.shape)
        d = float(depth[k]) + 0.01
        return float(wx[k]) * d, float(wy[k]) * d, True


def place(net: RoadNetwork, surface: np.ndarray, sras: Raster, seed: int) -> Obstacles:
    """Put buildings in city blocks, lights along streets, trees in the country, rails on bends."""
    rng = rng_for(seed, 3)
    rows: list[tuple[int, float, float, float, float, float, float, tuple[float, float, float], float]] = []
    xs, ys = net.city_xs, net.city_ys
    cxm, cym = float(np.mean(xs)), float(np.mean(ys))
    inset = 3.4 + 4.2
    for i in range(len(xs) - 1):
        for j in range(len(ys) - 1):
            x0, x1, y0, y1 = xs[i] + inset, xs[i + 1] - inset, ys[j] + inset, ys[j + 1] - inset
            if rng.random() < 0.12:  # a park: trees instead of buildings
                for _ in range(int(rng.integers(4, 10))):
                    rows.append(_tree(rng, rng.uniform(x0 + 3, x1 - 3), rng.uniform(y0 + 3, y1 - 3)))
                continue
            nxl, nyl = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            bx = np.linspace(x0, x1, nxl + 1)
            by = np.linspace(y0, y1, nyl + 1)
            centre = math.hypot((x0 + x1) / 2 - cxm, (y0 + y1) / 2 - cym)
            tall = max(0.2, 1.0 - centre / 350.0)
            for a in range(nxl):
                for b in range(nyl):
                    gap = rng.uniform(1.0, 3.0)
                    lx0, lx1 = bx[a] + gap, bx[a + 1] - gap
                    ly0, ly1 = by[b] + gap, by[b + 1] - gap
                    if lx1 - lx0 < 6 or ly1 - ly0 < 6:
                        continue
                    h = float(rng.uniform(7.0, 12.0) + rng.gamma(2.0, 12.0) * tall)
                    col = _FACADES[rng.integers(len(_FACADES))] * rng.uniform(0.85, 1.1)
                    rows.append((BUILDING, (lx0 + lx1) / 2, (ly0 + ly1) / 2, (lx1 - lx0) / 2, (ly1 - ly0) / 2, 0.0, h, tuple(np.clip(col, 0, 255)), 0.0))
    for road in net.roads:
        s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(road.pts, axis=0).T))])
        d = np.gradient(road.pts, axis=0)
        d /= np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
        normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
        ra, rb = net.node_radius[road.a] + 3.0, s[-1] - net.node_radius[road.b] - 3.0
        if road.kind == "city":
            for side in (-1.0, 1.0):
                for at in np.arange(ra + rng.uniform(0, 10), rb, rng.uniform(24.0, 34.0)):
                    k = int(np.searchsorted(s, at))
                    p = road.pts[k] + normal[k] * side * (road.half_width + 1.7)
                    arm = math.atan2(-normal[k][1] * side, -normal[k][0] * side)  # lamp arm over the road
                    rows.append((POLE, p[0], p[1], 0.18, 0.18, arm, 6.5, (92, 96, 100), 0.0))
        else:
            spacing = 9.0 if road.kind == "outskirts" else 16.0
            for side in (-1.0, 1.0):
                for at in np.arange(ra, rb, spacing):
                    if rng.random() < 0.45:
                        continue
                    k = int(np.searchsorted(s, at + rng.uniform(0, spacing)))
                    if k >= len(s):
                        continue
                    off = road.half_width + rng.uniform(2.8, 14.0)
                    p = road.pts[k] + normal[k] * side * off
                    rows.append(_tree(rng, p[0], p[1]))
            _rails(rows, road, s, d, normal, ra, rb)
    for _ in range(int(rng.integers(300, 500))):  # scattered woods
        ang, rad = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 1.0)
        w = (net.extent[2] - net.extent[0]) / 2, (net.extent[3] - net.extent[1]) / 2
        rows.append(_tree(rng, math.cos(ang) * rad * w[0], math.sin(ang) * rad * w[1]))
    obs = _table(rows)
    keep = _clear_of_roads(obs, surface, sras)
    obs = Obstacles(*(getattr(obs, f)[keep] for f in obs.__dataclass_fields__))
    obs.build_grid(net.extent)
    return obs


def _tree(rng: np.random.Generator, x: float, y: float) -> tuple:
    green = np.array([52, 96, 40]) * rng.uniform(0.75, 1.2) + rng.uniform(-8, 8, 3)
    return (TREE, x, y, 0.35, 0.35, 0.0, float(rng.uniform(5.0, 11.0)), tuple(np.clip(green, 0, 255)), float(rng.uniform(1.6, 3.2)))


def _rails(rows: list, road: Road, s: np.ndarray, d: np.ndarray, normal: np.ndarray, ra: float, rb: float) -> None:
    """Guard rails on the outside of sharp bends: things to crash into on fast roads."""
    h = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    kappa = np.gradient(h) / np.maximum(np.gradient(s), 1e-6)
    limit = 1 / 90.0 if road.kind == "highway" else 1 / 45.0
    for at in np.arange(ra, rb, 4.0):
        k = int(np.searchsorted(s, at))
        if k >= len(s) or abs(kappa[k]) < limit:
            continue
        side = -np.sign(kappa[k])  # outside of the bend
        p = road.pts[k] + normal[k] * side * (road.half_width + 1.4)
        rows.append((BARRIER, p[0], p[1], 2.0, 0.15, float(math.atan2(d[k, 1], d[k, 0])), 0.8, (200, 200, 196), 0.0))


def _table(rows: list) -> Obstacles:
    kind = np.array([r[0] for r in rows], np.int64)
    hl = np.array([r[3] for r in rows])
    hw = np.array([r[4] for r in rows])
    crown = np.array([r[8] for r in rows])
    return Obstacles(
        kind=kind, x=np.array([r[1] for r in rows]), y=np.array([r[2] for r in rows]),
        hl=hl, hw=hw, ang=np.array([r[5] for r in rows]), height=np.array([r[6] for r in rows]),
        colour=np.array([r[7] for r in rows], np.float64), crown=crown,
        bound=np.maximum(np.hypot(hl, hw), crown),
    )


def _clear_of_roads(obs: Obstacles, surface: np.ndarray, sras: Raster) -> np.ndarray:
    """Drop trees and buildings that would stand on a road; poles and rails stand where put."""
    grass = (surface == GRASS).astype(np.uint8)
    dist = cv2.distanceTransform(grass, cv2.DIST_L2, 3) * sras.res
    px = np.clip(((obs.x - sras.x0) / sras.res).astype(int), 0, sras.width - 1)
    py = np.clip(((obs.y - sras.y0) / sras.res).astype(int), 0, sras.height - 1)
    clearance = dist[py, px]
    need = np.where(obs.kind == TREE, 1.8, np.where(obs.kind == BUILDING, 0.0, -1.0))
    ok = clearance > need
    building = obs.kind == BUILDING
    ok[building] = True
    inside = (px >= 0) & (py >= 0)
    return ok & inside
