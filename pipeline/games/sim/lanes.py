"""Lanes and junction connectors as one array of points, for traffic, routing and lookups.

Every lane of every road and every turn through a junction is a *segment*: a polyline
sampled about every metre. All segments live in flat arrays so traffic moves with
vectorised index arithmetic and the nearest lane is one grid lookup away.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from pipeline.games.sim.roads import RoadNetwork, headings, resample

_CELL = 10.0


@dataclass
class Route:
    """A path along segments: the points the NPC follows and the minimap draws."""

    xy: np.ndarray  # (n, 2)
    heading: np.ndarray  # (n,)
    speed_limit: np.ndarray  # (n,)
    curvature: np.ndarray  # (n,) 1/m, smoothed, absolute
    segs: list[tuple[int, float, float]]  # (segment, s_from, s_to)
    s: np.ndarray  # (n,) arc length from the start
    connectors: list[tuple[int, int, int]]  # (first index, last index, segment) of each junction turn

    @property
    def target(self) -> np.ndarray:
        return self.xy[-1]


class LaneNet:
    """All lane and connector segments of a road network, with successors and a point grid."""

    def __init__(self, net: RoadNetwork) -> None:
        pieces: list[np.ndarray] = []
        meta: list[tuple[bool, int, int, int, int, float, float]] = []
        ins: dict[int, list[int]] = {}
        outs: dict[int, list[int]] = {}
        for ri, road in enumerate(net.roads):
            for direction in (0, 1):
                centre = road.pts if direction == 0 else road.pts[::-1]
                fa, ta = (road.a, road.b) if direction == 0 else (road.b, road.a)
                s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(centre, axis=0).T))])
                keep = (s >= net.node_radius[fa]) & (s <= s[-1] - net.node_radius[ta])
                if keep.sum() < 3:
                    keep[:] = True
                h = headings(centre)
                right = np.stack([np.sin(h), -np.cos(h)], axis=1)
                for k in range(road.lanes):
                    pts = resample((centre + right * (k + 0.5) * road.lane_width)[keep])
                    seg = len(meta)
                    pieces.append(pts)
                    meta.append((True, ri, k, fa, ta, road.speed_limit, road.lane_width))
                    outs.setdefault(fa, []).append(seg)
                    ins.setdefault(ta, []).append(seg)
        n_lanes = len(meta)
        nexts: list[list[int]] = [[] for _ in range(n_lanes)]
        for node in range(len(net.nodes)):
            degree = len(net.node_roads[node])
            for a in ins.get(node, []):
                for b in outs.get(node, []):
                    if meta[a][1] == meta[b][1] and degree > 1:
                        continue  # no U-turns where there is another way
                    p0, p1 = pieces[a][-1], pieces[b][0]
                    h0 = math.atan2(*(pieces[a][-1] - pieces[a][-2])[::-1])
                    h1 = math.atan2(*(pieces[b][1] - pieces[b][0])[::-1])
                    d = max(0.5, float(np.hypot(*(p1 - p0)))) * 0.42
                    c0 = p0 + d * np.array([math.cos(h0), math.sin(h0)])
                    c1 = p1 - d * np.array([math.cos(h1), math.sin(h1)])
                    t = np.linspace(0.0, 1.0, 24)[:, None]
                    bez = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c0 + 3 * (1 - t) * t**2 * c1 + t**3 * p1
                    seg = len(meta)
                    pieces.append(resample(bez))
                    limit = min(meta[a][5], meta[b][5])
                    meta.append((False, -1, meta[b][2], node, node, limit, meta[b][6]))
                    nexts[a].append(seg)
                    nexts.append([b])
        self.nexts = nexts
        self.n_segments = len(meta)
        self.count = np.array([len(p) for p in pieces])
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        self.length = np.array([float(np.hypot(*np.diff(p, axis=0).T).sum()) for p in pieces])
        self.step = self.length / np.maximum(self.count - 1, 1)
        self.is_lane = np.array([m[0] for m in meta])
        self.road = np.array([m[1] for m in meta])
        self.lane_index = np.array([m[2] for m in meta])
        self.from_node = np.array([m[3] for m in meta])
        self.to_node = np.array([m[4] for m in meta])
        self.speed = np.array([m[5] for m in meta])
        self.lane_width = np.array([m[6] for m in meta])
        xy = np.concatenate(pieces)
        self.x, self.y = xy[:, 0].copy(), xy[:, 1].copy()
        self.h = np.concatenate([headings(p) for p in pieces])
        self.seg_of = np.repeat(np.arange(self.n_segments), self.count)
        self.advisory = self._advisory(a_lat=2.4, brake=2.5)
        self._build_grid(net.extent)

    def _advisory(self, a_lat: float, brake: float) -> np.ndarray:
        """Per point: the speed a calm driver holds here, braking in time for bends ahead."""
        dh = np.angle(np.exp(1j * np.diff(self.h, append=self.h[-1])))
        kappa = np.abs(dh) / np.repeat(self.step, self.count)
        kappa = np.maximum(kappa, np.roll(kappa, 1))
        v = np.minimum(np.sqrt(a_lat / np.maximum(kappa, 1e-4)), np.repeat(self.speed, self.count))
        for seg in range(self.n_segments):
            a, n, ds = int(self.start[seg]), int(self.count[seg]), float(self.step[seg])
            v[a + n - 1] = min(v[a + n - 1], v[a + n - 2])
            for i in range(a + n - 2, a - 1, -1):
                v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * brake * ds))
        return v

    # -- point lookups -------------------------------------------------------------------

    def _build_grid(self, extent: tuple[float, float, float, float]) -> None:
        self.x0, self.y0 = extent[0], extent[1]
        self.gw = int((extent[2] - extent[0]) / _CELL) + 2
        self.gh = int((extent[3] - extent[1]) / _CELL) + 2
        cell = self._cell(self.x, self.y)
        self.order = np.argsort(cell, kind="stable")
        self.cell_start = np.searchsorted(cell[self.order], np.arange(self.gw * self.gh + 1))

    def _cell(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        cx = np.clip(((x - self.x0) / _CELL).astype(int), 0, self.gw - 1)
        cy = np.clip(((y - self.y0) / _CELL).astype(int), 0, self.gh - 1)
        return cy * self.gw + cx

    def candidates(self, x: float, y: float, reach: int = 1) -> np.ndarray:
        """Point indices in the grid cells around (x, y)."""
        cx = min(max(int((x - self.x0) / _CELL), 0), self.gw - 1)
        cy = min(max(int((y - self.y0) / _CELL), 0), self.gh - 1)
        parts = []
        for j in range(max(cy - reach, 0), min(cy + reach, self.gh - 1) + 1):
            a = self.cell_start[j * self.gw + max(cx - reach, 0)]
            b = self.cell_start[j * self.gw + min(cx + reach, self.gw - 1) + 1]
            parts.append(self.order[a:b])
        return np.concatenate(parts)

    def nearest(self, x: float, y: float, heading: float | None = None, lanes_only: bool = False) -> tuple[int, float, float]:
        """(point, distance, signed offset + = left of the lane) of the nearest lane point.

        With `heading`, points whose lane runs against it by more than 90 degrees lose.
        Returns point -1 when no lane is within ~20 m.
        """
        idx = self.candidates(x, y, 1)
        if lanes_only and len(idx):
            idx = idx[self.is_lane[self.seg_of[idx]]]
        if len(idx) == 0:
            idx = self.candidates(x, y, 3)
            if lanes_only and len(idx):
                idx = idx[self.is_lane[self.seg_of[idx]]]
            if len(idx) == 0:
                return -1, math.inf, 0.0
        dx, dy = x - self.x[idx], y - self.y[idx]
        d2 = dx * dx + dy * dy
        if heading is not None:
            against = np.cos(self.h[idx] - heading) < 0.0
            d2 = d2 + against * 400.0
        k = int(np.argmin(d2))
        p = int(idx[k])
        hp = self.h[p]
        offset = -math.sin(hp) * float(dx[k]) + math.cos(hp) * float(dy[k])
        return p, math.hypot(float(dx[k]), float(dy[k])), offset

    def point_s(self, p: int) -> tuple[int, float]:
        """(segment, arc length along it) of a point index."""
        seg = int(self.seg_of[p])
        return seg, float((p - self.start[seg]) * self.step[seg])

    def pose_at(self, seg: int, s: float) -> tuple[float, float, float]:
        """(x, y, heading) at arc length s along a segment."""
        f = min(max(s / self.step[seg], 0.0), self.count[seg] - 1.000001)
        i = int(f)
        t = f - i
        p = self.start[seg] + i
        x = self.x[p] + (self.x[p + 1] - self.x[p]) * t
        y = self.y[p] + (self.y[p + 1] - self.y[p]) * t
        return float(x), float(y), float(math.atan2(self.y[p + 1] - self.y[p], self.x[p + 1] - self.x[p]))

    # -- routing ---------------------------------------------------------------------------

    def route(self, seg0: int, s0: float, seg_t: int, s_t: float) -> Route | None:
        """Shortest drive from (seg0, s0) to (seg_t, s_t) along lanes; None if unreachable."""
        if seg0 == seg_t and s_t > s0 + 2.0:
            return self.route_along([(seg0, s0, s_t)])
        best = {seg0: float(self.length[seg0] - s0)}
        prev: dict[int, int] = {}
        heap = [(best[seg0], seg0)]
        found = -1
        while heap:
            cost, u = heapq.heappop(heap)
            if cost > best.get(u, math.inf):
                continue
            if seg_t in self.nexts[u]:
                found = u
                break
            for v in self.nexts[u]:
                c = cost + float(self.length[v])
                if c < best.get(v, math.inf):
                    best[v] = c
                    prev[v] = u
                    heapq.heappush(heap, (c, v))
        if found < 0:
            return None
        chain = [found]
        while chain[-1] != seg0:
            chain.append(prev[chain[-1]])
        chain.reverse()
        segs = [(seg0, s0, float(self.length[seg0]))]
        segs += [(c, 0.0, float(self.length[c])) for c in chain[1:]]
        segs.append((seg_t, 0.0, s_t))
        return self.route_along(segs)

    def route_along(self, segs: list[tuple[int, float, float]]) -> Route:
        """The route through these (segment, s_from, s_to) pieces, in order."""
        idx = []
        for seg, a, b in segs:
            i0 = self.start[seg] + int(math.ceil(a / self.step[seg] - 1e-6))
            i1 = self.start[seg] + int(math.floor(b / self.step[seg] + 1e-6))
            idx.append(np.arange(i0, max(i0, i1) + 1))
        pts = np.concatenate(idx)
        xy = np.stack([self.x[pts], self.y[pts]], axis=1)
        keep = np.concatenate([[True], np.hypot(*np.diff(xy, axis=0).T) > 0.2])
        xy, pts = xy[keep], pts[keep]
        h = headings(xy)
        ds = np.maximum(np.hypot(*np.diff(xy, axis=0).T), 0.2)
        dh = np.angle(np.exp(1j * np.diff(h)))
        kappa = np.abs(np.concatenate([dh / ds, [0.0]]))
        kappa = np.convolve(kappa, np.ones(5) / 5.0, mode="same")
        seg_of = self.seg_of[pts]
        conn = ~self.is_lane[seg_of]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], conn.astype(np.int8), [0]])))
        connectors = [(int(a), int(b) - 1, int(seg_of[a])) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
        return Route(xy, h, self.speed[seg_of], kappa, segs, s, connectors)
