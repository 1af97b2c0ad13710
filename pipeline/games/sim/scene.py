"""Upright things in view (buildings, rails, trees, lights, cars) as one depth-sorted draw list.

Projection, visibility, shading and fog are computed for all objects of a kind at once
with numpy; the Python loop left only hands ready-made integer polygons to OpenCV.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from pipeline.games.sim.camera import Pose
from pipeline.games.sim.look import Look, headlight
from pipeline.games.sim.objects import BARRIER, BUILDING, POLE, TREE, Obstacles

SH = 3  # sub-pixel bits
ONE = 1 << SH
NEAR = 0.25
_FACES = np.array([(0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7), (4, 5, 6, 7)])
_POLY, _CIRCLE, _LINE = 0, 1, 2
NO_DECOR, STRIPES, WINDOWS = 0, 1, 2
_SHADOW = np.array([22.0, 22.0, 24.0])
_TRUNK = np.array([86.0, 64.0, 44.0])


def box_corners(x: np.ndarray, y: np.ndarray, hl: np.ndarray, hw: np.ndarray, ang: np.ndarray, z0: np.ndarray, z1: np.ndarray) -> np.ndarray:
    """(n, 8, 3) corners: bottom ring counter-clockwise, then the top ring."""
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    lx = np.array([1.0, -1.0, -1.0, 1.0])[None] * hl[:, None]
    ly = np.array([1.0, 1.0, -1.0, -1.0])[None] * hw[:, None]
    wx = x[:, None] + lx * c - ly * s
    wy = y[:, None] + lx * s + ly * c
    out = np.empty((len(x), 8, 3))
    out[:, :4, 0] = out[:, 4:, 0] = wx
    out[:, :4, 1] = out[:, 4:, 1] = wy
    out[:, :4, 2] = z0[:, None]
    out[:, 4:, 2] = z1[:, None]
    return out


def _far_first(item: tuple) -> tuple[float, int]:
    return -item[0], item[1]


class Scene:
    """Collects primitives for one frame of one camera, then draws them far to near."""

    def __init__(self, pose: Pose, focal: float, cx: float, cy: float, look: Look) -> None:
        self.pose, self.f, self.cx, self.cy, self.look = pose, focal, cx, cy, look
        self.rot = pose.rotation()
        self.origin = np.array([pose.x, pose.y, pose.z])
        self.items: list[tuple[float, int, int, Any, Any, Any]] = []
        self.window_budget = 3  # nearest buildings that get windows drawn
        self._boxes: list[tuple[np.ndarray, ...]] = []
        self.sun = np.array([math.cos(look.sun_azimuth), math.sin(look.sun_azimuth)])

    # -- shared maths ------------------------------------------------------------------------

    def cam(self, pts: np.ndarray) -> np.ndarray:
        return (pts - self.origin) @ self.rot.T

    def project(self, cam: np.ndarray) -> np.ndarray:
        """Fixed-point pixel coordinates (int32) of camera-space points in front of the camera."""
        z = np.maximum(cam[..., 2], NEAR)
        uv = np.stack([self.cx + self.f * cam[..., 0] / z, self.cy + self.f * cam[..., 1] / z], axis=-1)
        return np.ascontiguousarray((np.clip(uv, -3e4, 3e4) * ONE).astype(np.int32))

    def shade(self, base: np.ndarray, depth: np.ndarray, light: np.ndarray) -> np.ndarray:
        """Lit, tinted and fogged colours; base (..., 3), depth and light broadcast against it."""
        look = self.look
        fog = look.fog(depth)[..., None]
        c = base * look.tint * np.minimum(light, 1.0)[..., None] * (1 - fog) + look.fog_colour * fog
        return np.clip(c, 0, 255)

    # -- adding things -----------------------------------------------------------------------

    def boxes(self, corners: np.ndarray, colour: np.ndarray, depth: np.ndarray, seq: np.ndarray,
              top: np.ndarray | None = None, decor: np.ndarray | None = None) -> None:
        """Queue solid boxes; they are drawn in one batch (numpy overhead once per frame)."""
        n = len(corners)
        if n:
            self._boxes.append((corners, colour, colour if top is None else top, depth, seq,
                                np.zeros(n, np.int64) if decor is None else decor))

    def _flush_boxes(self) -> None:
        """Visible sides (and the top when seen from above) of all queued boxes, sun-shaded."""
        if not self._boxes:
            return
        parts = list(zip(*self._boxes, strict=True))
        self._boxes = []
        corners, colour, top_colour, depth, seqs, decor = (np.concatenate(p) for p in parts)
        n = len(corners)
        cam = self.cam(corners)
        uv = self.project(cam)
        z = cam[..., 2]
        a, b = corners[:, :4, :2], np.roll(corners[:, :4, :2], -1, axis=1)
        nx, ny = b[..., 1] - a[..., 1], a[..., 0] - b[..., 0]
        facing = (self.pose.x - a[..., 0]) * nx + (self.pose.y - a[..., 1]) * ny > 0
        top = (self.pose.z > corners[:, 4, 2])[:, None]
        vis = np.concatenate([facing, top], axis=1)
        norm = np.maximum(np.hypot(nx, ny), 1e-9)
        shade = np.concatenate([0.62 + 0.38 * np.maximum(0, (nx * self.sun[0] + ny * self.sun[1]) / norm), np.ones((n, 1))], axis=1)
        d = np.maximum(depth, 0.0)
        light = self._light2(d, shade)
        base = np.concatenate([np.repeat(colour[:, None, :], 4, axis=1), top_colour[:, None, :]], axis=1)
        cols = self.shade(base, d[:, None], light).tolist()
        clip = (z < NEAR).any(axis=1)
        polys = np.ascontiguousarray(uv[:, _FACES])  # (n, 5, 4, 2)
        items = self.items
        keys, seql = depth.tolist(), seqs.tolist()
        near = np.flatnonzero((decor == WINDOWS) & (d < 90.0) & ~clip)
        windowed = set(near[np.argsort(d[near])][: self.window_budget].tolist())
        wins: list[tuple[int, int]] = []
        for i, j in zip(*np.nonzero(vis), strict=True):
            if clip[i]:
                items.append((keys[i], seql[i], _POLY, cam[i][_FACES[j]], cols[i][j], True))
            else:
                items.append((keys[i], seql[i], _POLY, polys[i, j], cols[i][j], False))
            if j == 4 or decor[i] == NO_DECOR:
                continue
            if decor[i] == STRIPES:
                f = cam[i][_FACES[j]]
                half = np.array([f[0], (f[0] + f[1]) / 2, (f[3] + f[2]) / 2, f[3]])
                red = self.shade(np.array([205.0, 30.0, 30.0]), np.array(d[i]), np.array(light[i, j])).tolist()
                items.append((keys[i] - 0.01, seql[i], _POLY, half, red, True))
            elif i in windowed:
                wins.append((i, j))
        if wins:
            self._windows(cam, corners[:, 4, 2], wins, keys, seql, light, d)

    def _windows(self, cam: np.ndarray, heights: np.ndarray, faces: list[tuple[int, int]], keys: list[float],
                 seqs: list[int], light: np.ndarray, d: np.ndarray) -> None:
        """Bands of windows, one per floor, on building faces (all faces in one numpy pass)."""
        fi = np.array([i for i, _ in faces])
        face = cam[fi[:, None], _FACES[[j for _, j in faces]]]  # (F, 4, 3): bottom a, bottom b, top b, top a
        h = heights[fi]
        floors = np.arange(1.6, float(h.max()) - 1.4, 3.3)
        if len(floors) == 0:
            return
        up_a = (face[:, 3] - face[:, 0]) / h[:, None]
        up_b = (face[:, 2] - face[:, 1]) / h[:, None]
        a = face[:, 0] + (face[:, 1] - face[:, 0]) * 0.06
        b = face[:, 0] + (face[:, 1] - face[:, 0]) * 0.94
        ua, ub = up_a + (up_b - up_a) * 0.06, up_a + (up_b - up_a) * 0.94
        z0 = floors[None, :, None]
        z1 = z0 + 1.3
        quads = np.stack([a[:, None] + ua[:, None] * z0, b[:, None] + ub[:, None] * z0,
                          b[:, None] + ub[:, None] * z1, a[:, None] + ua[:, None] * z1], axis=2)  # (F, K, 4, 3)
        uv = self.project(quads)
        fl = np.array([light[i, j] for i, j in faces])
        glass = self.shade(np.array([70.0, 84.0, 102.0]), d[fi], fl).tolist()
        warm = self.shade(np.array([255.0, 214.0, 140.0]), d[fi], np.ones(len(fi))).tolist()
        night = self.look.ambient < 0.4
        fit = (floors[None, :] < h[:, None] - 1.4).tolist()
        items = self.items
        for k, i in enumerate(fi.tolist()):
            key, seq = keys[i] - 0.001, seqs[i]
            for m in range(len(floors)):
                if fit[k][m]:
                    lit = night and (seq * 7 + m * 13) % 3 != 0
                    items.append((key, seq, _POLY, uv[k, m], warm[k] if lit else glass[k], False))

    def _light2(self, d: np.ndarray, shade: np.ndarray) -> np.ndarray:
        look = self.look
        extra = headlight(d, np.zeros_like(d)) * (1 - look.ambient) if look.headlights else np.zeros_like(d)
        return look.ambient * shade + extra[:, None]

    def obstacles(self, obs: Obstacles, idx: np.ndarray, depth: np.ndarray) -> None:
        kinds = obs.kind[idx]
        sel = (kinds == BUILDING) | (kinds == BARRIER)
        b = idx[sel]
        if len(b):
            corners = box_corners(obs.x[b], obs.y[b], obs.hl[b], obs.hw[b], obs.ang[b], np.zeros(len(b)), obs.height[b])
            decor = np.where(obs.kind[b] == BARRIER, STRIPES, WINDOWS)
            self.boxes(corners, obs.colour[b], depth[sel], b, decor=decor)
        t = idx[kinds == TREE]
        if len(t):
            self._trees(obs, t, depth[kinds == TREE])
        p = idx[kinds == POLE]
        if len(p):
            self._poles(obs, p, depth[kinds == POLE])

    def _uprights(self, x: np.ndarray, y: np.ndarray, z0: np.ndarray, z1: np.ndarray, half: float) -> tuple[np.ndarray, np.ndarray]:
        """Camera-facing quads (n, 4, 3) in camera space and whether they need clipping."""
        right = np.array([math.sin(self.pose.yaw), -math.cos(self.pose.yaw), 0.0]) * half
        base = np.stack([x, y, np.zeros_like(x)], axis=1)
        up0 = np.zeros((len(x), 3))
        up1 = np.zeros((len(x), 3))
        up0[:, 2], up1[:, 2] = z0, z1
        quad = np.stack([base - right + up0, base + right + up0, base + right + up1, base - right + up1], axis=1)
        cam = self.cam(quad)
        return cam, (cam[..., 2] < NEAR).any(axis=1)

    def _trees(self, obs: Obstacles, t: np.ndarray, depth: np.ndarray) -> None:
        h, crown = obs.height[t], obs.crown[t]
        cam, clip = self._uprights(obs.x[t], obs.y[t], np.zeros(len(t)), h - crown, 0.2)
        uv = self.project(cam)
        d = np.maximum(depth, 0.0)
        light = self._light2(d, np.ones((len(t), 1)))[:, 0]
        trunk = self.shade(_TRUNK, d, light * 0.8).tolist()
        centre = self.cam(np.stack([obs.x[t], obs.y[t], h - crown], axis=1))
        zc = np.maximum(centre[:, 2], NEAR)
        cu = (self.cx + self.f * centre[:, 0] / zc) * ONE
        cv = (self.cy + self.f * centre[:, 1] / zc) * ONE
        r = self.f * crown / zc
        dark = self.shade(obs.colour[t], d, light * 0.75).tolist()
        lit = self.shade(obs.colour[t] * 1.25, d, light).tolist()
        items = self.items
        for i in range(len(t)):
            key = float(depth[i])
            items.append((key, 10000 + i, _POLY, cam[i] if clip[i] else uv[i], trunk[i], bool(clip[i])))
            if centre[i, 2] > NEAR and r[i] >= 0.4:
                items.append((key, 10000 + i, _CIRCLE, (int(cu[i]), int(cv[i])), int(r[i] * ONE), dark[i]))
                if r[i] > 3:
                    c2 = (int(cu[i] - 0.25 * r[i] * ONE), int(cv[i] - 0.3 * r[i] * ONE))
                    items.append((key, 10000 + i, _CIRCLE, c2, int(0.6 * r[i] * ONE), lit[i]))

    def _poles(self, obs: Obstacles, p: np.ndarray, depth: np.ndarray) -> None:
        """Street lights: a mast, an arm over the road and, after dusk, a glowing lamp."""
        h = obs.height[p]
        x, y, ang = obs.x[p], obs.y[p], obs.ang[p]
        ax, ay = x + 1.6 * np.cos(ang), y + 1.6 * np.sin(ang)
        pts = np.stack([np.stack([x, y, np.zeros_like(h)], 1), np.stack([x, y, h], 1), np.stack([ax, ay, h - 0.15], 1)], axis=1)
        cam = self.cam(pts)
        ok = (cam[..., 2] > NEAR).all(axis=1)
        uv = self.project(cam)
        width = np.maximum(1, np.round(self.f * 0.16 / np.maximum(cam[:, 0, 2], NEAR))).astype(int).tolist()
        d = np.maximum(depth, 0.0)
        cols = self.shade(obs.colour[p], d, self._light2(d, np.ones((len(p), 1)))[:, 0] * 0.9).tolist()
        lamps = self.look.ambient < 0.5
        lr = (np.maximum(1.0, self.f * 0.3 / np.maximum(cam[:, 2, 2], NEAR)) * ONE).astype(int).tolist()
        items = self.items
        for i in np.flatnonzero(ok):
            key, seq = float(depth[i]), 20000 + int(i)
            p0, p1, p2 = tuple(uv[i, 0].tolist()), tuple(uv[i, 1].tolist()), tuple(uv[i, 2].tolist())
            items.append((key, seq, _LINE, (p0, p1), cols[i], width[i]))
            if key < 45.0:  # the arm is under a pixel farther away
                items.append((key, seq, _LINE, (p1, p2), cols[i], max(1, width[i] * 2 // 3)))
            if lamps:
                items.append((key - 0.01, seq, _CIRCLE, p2, lr[i], (255, 236, 170)))

    def cars(self, x: np.ndarray, y: np.ndarray, h: np.ndarray, length: np.ndarray, width: np.ndarray, height: np.ndarray, colour: np.ndarray, depth: np.ndarray, seq0: int) -> None:
        """Cars as a ground shadow, a body box, a cabin (or cargo) box and lights when dark."""
        n = len(x)
        if n == 0:
            return
        zeros, ones = np.zeros(n), np.ones(n)
        shadow = box_corners(x, y, length * 0.52, width * 0.55, h, zeros + 0.02, zeros + 0.02)
        sc = self.cam(shadow[:, :4])
        suv = self.project(sc)
        sclip = (sc[..., 2] < NEAR).any(axis=1)
        d = np.maximum(depth, 0.0)
        scol = self.shade(_SHADOW, d, np.ones(n)).tolist()
        for i in range(n):
            self.items.append((float(depth[i]) + 0.02, seq0 + i, _POLY, sc[i] if sclip[i] else suv[i], scol[i], bool(sclip[i])))
        zb = 0.25 + 0.33 * height
        body = box_corners(x, y, length / 2, width / 2, h, zeros + 0.22, zb)
        big = length > 5.5
        back = np.where(big, 0.12, 0.05) * length
        cxp, cyp = x - back * np.cos(h), y - back * np.sin(h)
        cl = length * np.where(big, 0.4, 0.27)
        glass = np.where(big[:, None], colour * 0.9, colour * 0.18 + np.array([34.0, 40.0, 50.0]))
        cab = box_corners(cxp, cyp, cl, width * 0.45 * ones, h, zb, height)
        seq = seq0 + np.arange(n)
        self.boxes(np.concatenate([body, cab]), np.concatenate([colour, glass]), np.concatenate([depth + 0.01, depth]),
                   np.concatenate([seq, seq]), top=np.concatenate([colour, colour]))
        if self.look.ambient < 0.6 or self.look.weather in ("rain", "fog"):
            self._lights(x, y, h, length, width, zb, depth, seq0)

    def _lights(self, x: np.ndarray, y: np.ndarray, h: np.ndarray, length: np.ndarray, width: np.ndarray, z: np.ndarray, depth: np.ndarray, seq0: int) -> None:
        c, s = np.cos(h), np.sin(h)
        front = (self.pose.x - x) * c + (self.pose.y - y) * s > 0
        sign = np.where(front, 1.0, -1.0)
        pts = []
        for side in (-1.0, 1.0):
            px = x + sign * c * length / 2 - s * side * (width / 2 - 0.3)
            py = y + sign * s * length / 2 + c * side * (width / 2 - 0.3)
            pts.append(np.stack([px, py, z - 0.1], axis=1))
        cam = self.cam(np.stack(pts, axis=1))  # (n, 2, 3)
        zc = np.maximum(cam[..., 2], NEAR)
        u = (self.cx + self.f * cam[..., 0] / zc) * ONE
        v = (self.cy + self.f * cam[..., 1] / zc) * ONE
        r = np.maximum(0.6, self.f * np.where(front, 0.16, 0.11)[:, None] / zc) * ONE
        for i in range(len(x)):
            colour = (255, 250, 215) if front[i] else (255, 40, 28)
            for k in range(2):
                if cam[i, k, 2] > NEAR:
                    self.items.append((float(depth[i]) - 0.05, seq0 + i, _CIRCLE, (int(u[i, k]), int(v[i, k])), int(r[i, k]), colour))

    # -- drawing ----------------------------------------------------------------------------

    def draw(self, img: np.ndarray) -> None:
        """Paint everything far to near (the painter's algorithm)."""
        self._flush_boxes()
        self.items.sort(key=_far_first)
        fill, circle, line, line8 = cv2.fillConvexPoly, cv2.circle, cv2.line, cv2.LINE_8
        for it in self.items:
            if it[2] == _POLY:
                if it[5] is True:
                    pts = self._clip(it[3])
                    if pts is None:
                        continue
                    fill(img, pts, it[4], line8, SH)
                else:
                    fill(img, it[3], it[4], line8, SH)
            elif it[2] == _CIRCLE:
                circle(img, it[3], it[4], it[5], -1, line8, SH)
            else:
                line(img, it[3][0], it[3][1], it[4], it[5], cv2.LINE_AA, SH)

    def _clip(self, cam: np.ndarray) -> np.ndarray | None:
        """Clip a camera-space polygon at the near plane and project it."""
        out = []
        n = len(cam)
        for j in range(n):
            a, b = cam[j], cam[(j + 1) % n]
            if a[2] >= NEAR:
                out.append(a)
            if (a[2] >= NEAR) != (b[2] >= NEAR):
                t = (NEAR - a[2]) / (b[2] - a[2])
                out.append(a + (b - a) * t)
        if len(out) < 3:
            return None
        return self.project(np.array(out))
