"""The GTA-like minimap: a heading-up map of nearby roads with the route to the target.

It always sits in the bottom-left corner at a size derived from the frame size, so code
that augments recorded frames can mask it with `minimap_rect(width, height)`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.games.sim.world import World

_RES = 1.5  # metres per pixel of the pre-rendered map
_SPAN = 170.0  # metres from the left to the right edge of the minimap
_BG = (34, 44, 40)
_ROAD = (150, 150, 154)
_BUILDING = (70, 78, 82)
_ROUTE = (178, 92, 240)
_TARGET = (250, 210, 40)


def minimap_rect(width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the minimap inside a frame of this size: bottom-left, fixed share."""
    mw, mh = max(16, round(width * 0.27)), max(12, round(height * 0.25))
    margin = max(1, round(height * 0.03))
    return margin, height - margin - mh, mw, mh


class Minimap:
    """Draws the minimap of one world into frames."""

    def __init__(self, world: World) -> None:
        x0, y0, x1, y1 = world.extent
        self.x0, self.y0 = x0, y0
        w, h = int((x1 - x0) / _RES) + 1, int((y1 - y0) / _RES) + 1
        tex = np.full((h, w, 3), _BG, np.uint8)
        obs = world.obstacles
        for i in np.flatnonzero(obs.kind == 0):
            c = ((obs.x[i] - x0) / _RES, (obs.y[i] - y0) / _RES)
            size = (2 * obs.hl[i] / _RES, 2 * obs.hw[i] / _RES)
            box = cv2.boxPoints((c, size, math.degrees(obs.ang[i])))
            cv2.fillConvexPoly(tex, np.round(box * 4).astype(np.int32), _BUILDING, cv2.LINE_AA, 2)
        for road in world.net.roads:
            pts = np.round((road.pts - [x0, y0]) / _RES * 4).astype(np.int32)
            width = max(1, int(round(2 * road.half_width / _RES)))
            cv2.polylines(tex, [pts], False, _ROAD, width, cv2.LINE_AA, 2)
        self.tex = tex

    def draw(self, img: np.ndarray, rect: tuple[int, int, int, int], x: float, y: float, heading: float, route: np.ndarray | None, start: int) -> None:
        """Paint the minimap into img[rect]: map turned heading-up, route, target, the car."""
        rx, ry, rw, rh = rect
        scale = _SPAN / rw  # metres per minimap pixel
        cu, cv = rw / 2, rh * 0.62
        s, c = math.sin(heading), math.cos(heading)
        # minimap (u, v) from world (X, Y): u = cu + ((X-x) s - (Y-y) c)/scale, v = cv - ((X-x) c + (Y-y) s)/scale
        a = np.array([[s, -c], [-c, -s]]) / scale * _RES
        b = np.array([cu, cv]) + np.array([[s, -c], [-c, -s]]) @ np.array([self.x0 - x, self.y0 - y]) / scale
        m = np.column_stack([a, b])
        view = img[ry : ry + rh, rx : rx + rw]
        cv2.warpAffine(self.tex, m, (rw, rh), dst=view, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=_BG)
        thick = max(1, rw // 40)
        if route is not None and len(route) > start + 1:
            pts = route[start : start + 600 : 3]
            if len(pts) < 2 or not np.array_equal(pts[-1], route[-1]):
                pts = np.vstack([pts, route[-1:]])
            d = pts - [x, y]
            uv = np.stack([cu + (d[:, 0] * s - d[:, 1] * c) / scale, cv - (d[:, 0] * c + d[:, 1] * s) / scale], axis=1)
            uv = np.clip(uv, -4 * rw, 4 * rw)
            cv2.polylines(view, [np.round(uv * 4).astype(np.int32)], False, _ROUTE, thick + 1, cv2.LINE_AA, 2)
            tu, tv = float(np.clip(uv[-1, 0], 2, rw - 3)), float(np.clip(uv[-1, 1], 2, rh - 3))
            cv2.circle(view, (int(tu * 4), int(tv * 4)), max(2, rw // 14) * 4, _TARGET, -1, cv2.LINE_AA, 2)
        size = max(2.5, rw / 14)
        tri = np.array([[cu, cv - size], [cu - size * 0.65, cv + size * 0.6], [cu + size * 0.65, cv + size * 0.6]])
        cv2.fillConvexPoly(view, np.round(tri * 4).astype(np.int32), (255, 255, 255), cv2.LINE_AA, 2)
        cv2.rectangle(view, (0, 0), (rw - 1, rh - 1), (12, 14, 16), 1)
