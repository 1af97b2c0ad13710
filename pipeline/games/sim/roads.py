"""The road network of one map seed: a city grid, a curvy outskirts ring and a highway loop.

Roads are centrelines between junction nodes, resampled every metre, so lanes, the
ground texture, obstacles and routing all derive from one small graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: road kind -> (lanes per direction, lane width m, speed limit m/s)
KINDS: dict[str, tuple[int, float, float]] = {
    "city": (1, 3.4, 13.9),
    "outskirts": (1, 3.5, 19.4),
    "highway": (2, 3.7, 30.5),
}


def rng_for(seed: int, *tags: int) -> np.random.Generator:
    """A generator for any integer seed (negative and huge ones too) and a purpose tag."""
    seed = int(seed)
    words = [abs(seed) & 0xFFFFFFFF, (abs(seed) >> 32) & 0xFFFFFFFF, 1 if seed < 0 else 0]
    return np.random.default_rng(np.random.SeedSequence([*words, *tags]))


def resample(pts: np.ndarray, step: float = 1.0) -> np.ndarray:
    """A polyline resampled to (almost) uniform spacing, keeping both end points."""
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(math.ceil(s[-1] / step)) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1)


def headings(pts: np.ndarray) -> np.ndarray:
    """Heading (rad, CCW from +x) at each point of a polyline."""
    d = np.gradient(pts, axis=0)
    return np.arctan2(d[:, 1], d[:, 0])


def _wiggly(p0: np.ndarray, p1: np.ndarray, rng: np.random.Generator, wiggle: float) -> np.ndarray:
    """A curvy road from p0 to p1: the straight line plus sine bumps kept above ~35 m radius."""
    length = float(np.hypot(*(p1 - p0)))
    t = np.linspace(0.0, 1.0, max(8, int(length / 2)))
    off = np.zeros_like(t)
    for k in (1, 2, 3):
        amp_max = min(wiggle * length, length**2 / (35.0 * k * k * math.pi**2))
        off += rng.uniform(-amp_max, amp_max) / k * np.sin(k * math.pi * t)
    d = (p1 - p0) / max(length, 1e-6)
    normal = np.array([-d[1], d[0]])
    return p0[None] + t[:, None] * (p1 - p0)[None] + off[:, None] * normal[None]


@dataclass
class Road:
    """One two-way road from node `a` to node `b` along `pts`."""

    a: int
    b: int
    pts: np.ndarray  # (n, 2) centreline from a to b, ~1 m spacing
    kind: str

    @property
    def lanes(self) -> int:
        return KINDS[self.kind][0]

    @property
    def lane_width(self) -> float:
        return KINDS[self.kind][1]

    @property
    def speed_limit(self) -> float:
        return KINDS[self.kind][2]

    @property
    def half_width(self) -> float:
        return self.lanes * self.lane_width

    @property
    def length(self) -> float:
        return float(np.hypot(*np.diff(self.pts, axis=0).T).sum())


@dataclass
class RoadNetwork:
    """Junction nodes and the roads between them, plus the city grid for placing buildings."""

    nodes: np.ndarray  # (N, 2)
    roads: list[Road]
    city_xs: np.ndarray  # grid column x positions
    city_ys: np.ndarray  # grid row y positions
    node_roads: list[list[int]] = field(default_factory=list)
    node_radius: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extent: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def finish(self) -> RoadNetwork:
        """Derive per-node road lists, junction clearing radii and the world extent."""
        self.node_roads = [[] for _ in range(len(self.nodes))]
        for i, road in enumerate(self.roads):
            self.node_roads[road.a].append(i)
            self.node_roads[road.b].append(i)
        radius = np.zeros(len(self.nodes))
        for n, ids in enumerate(self.node_roads):
            kinds = {self.roads[i].kind for i in ids}
            hw = max(self.roads[i].half_width for i in ids)
            radius[n] = hw + (5.0 if kinds == {"city"} else 7.0)
            if len(ids) == 2 and kinds == {"highway"}:
                radius[n] = 0.0  # a mere split point of the loop
        self.node_radius = radius
        allpts = np.concatenate([r.pts for r in self.roads])
        lo, hi = allpts.min(axis=0) - 45.0, allpts.max(axis=0) + 45.0
        self.extent = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
        return self


def _connected(n: int, edges: list[tuple[int, int]]) -> bool:
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    seen = {0}
    stack = [0]
    while stack:
        for m in adj[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return len(seen) == n


def generate(seed: int) -> RoadNetwork:
    """Build the road network for a map seed; every integer gives a connected, valid map."""
    rng = rng_for(seed, 1)
    nx, ny = int(rng.integers(5, 8)), int(rng.integers(5, 8))
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(68.0, 105.0, nx - 1))])
    ys = np.concatenate([[0.0], np.cumsum(rng.uniform(68.0, 105.0, ny - 1))])
    xs -= xs.mean()
    ys -= ys.mean()
    nodes: list[np.ndarray] = [np.array([x, y]) for y in ys for x in xs]
    grid = [(j * nx + i, j * nx + i + 1) for j in range(ny) for i in range(nx - 1)]
    grid += [(j * nx + i, (j + 1) * nx + i) for j in range(ny - 1) for i in range(nx)]
    # Knock out some streets (T-junctions, plazas) while every node keeps two roads.
    order = rng.permutation(len(grid))
    edges = list(grid)
    for k in order[: int(len(grid) * rng.uniform(0.05, 0.16))]:
        e = grid[k]
        trial = [x for x in edges if x != e]
        deg_a = sum(e[0] in x for x in trial)
        deg_b = sum(e[1] in x for x in trial)
        if deg_a >= 2 and deg_b >= 2 and _connected(nx * ny, trial):
            edges = trial
    roads = [Road(a, b, resample(np.stack([nodes[a], nodes[b]])), "city") for a, b in edges]

    # Outskirts ring: curvy roads between ring nodes, spokes into the city's border nodes.
    half = max(xs[-1], ys[-1])
    r_ring = half * 1.3 + rng.uniform(60.0, 90.0)
    k_ring = int(rng.integers(6, 9))
    angles = np.sort((np.arange(k_ring) + rng.uniform(-0.25, 0.25, k_ring)) * 2 * math.pi / k_ring)
    angles += rng.uniform(0, 2 * math.pi)
    ring_ids = []
    for ang in angles:
        rr = r_ring * rng.uniform(0.93, 1.07)
        ring_ids.append(len(nodes))
        nodes.append(np.array([rr * math.cos(ang), rr * math.sin(ang)]))
    for i in range(k_ring):
        a, b = ring_ids[i], ring_ids[(i + 1) % k_ring]
        a0, a1 = angles[i], angles[(i + 1) % k_ring]
        if a1 < a0:
            a1 += 2 * math.pi
        ra, rb = np.hypot(*nodes[a]), np.hypot(*nodes[b])
        t = np.linspace(0.0, 1.0, 80)
        ang = a0 + (a1 - a0) * t
        rad = ra + (rb - ra) * t + rng.uniform(-18, 18) * np.sin(2 * math.pi * t) ** 2
        rad += rng.uniform(-10, 10) * np.sin(3 * math.pi * t)
        pts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
        pts[0], pts[-1] = nodes[a], nodes[b]
        roads.append(Road(a, b, resample(pts), "outskirts"))
    border = [j * nx + i for j in range(ny) for i in range(nx) if i in (0, nx - 1) or j in (0, ny - 1)]
    used: set[int] = set()
    for rid in ring_ids:
        if rng.random() < 0.15 and len(used) >= 3:
            continue
        d = [float(np.hypot(*(nodes[b] - nodes[rid]))) if b not in used else 1e9 for b in border]
        b = border[int(np.argmin(d))]
        used.add(b)
        roads.append(Road(b, rid, resample(_wiggly(nodes[b], nodes[rid], rng, 0.12)), "outskirts"))

    # Highway loop, split at junctions that ramps connect to the ring.
    r_hwy = r_ring + rng.uniform(110.0, 150.0)
    ph = rng.uniform(0, 2 * math.pi, 2)
    t = np.linspace(0.0, 2 * math.pi, 1400, endpoint=False)
    rad = r_hwy * (1 + 0.07 * np.sin(2 * t + ph[0]) + 0.04 * np.sin(3 * t + ph[1]))
    loop = np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)
    n_j = int(rng.integers(3, 5))
    picks = sorted(rng.choice(k_ring, size=n_j, replace=False).tolist())
    cut_idx = []
    for p in picks:
        ang = math.atan2(nodes[ring_ids[p]][1], nodes[ring_ids[p]][0]) % (2 * math.pi)
        cut_idx.append(int(round(ang / (2 * math.pi) * len(t))) % len(t))
    cut_idx = sorted(set(cut_idx))
    hwy_ids = []
    for ci in cut_idx:
        hwy_ids.append(len(nodes))
        nodes.append(loop[ci].copy())
    for i, ci in enumerate(cut_idx):
        cj = cut_idx[(i + 1) % len(cut_idx)]
        idx = np.arange(ci, cj + 1) if cj > ci else np.concatenate([np.arange(ci, len(t)), np.arange(0, cj + 1)])
        roads.append(Road(hwy_ids[i], hwy_ids[(i + 1) % len(cut_idx)], resample(loop[idx]), "highway"))
    for hid in hwy_ids:
        d = [float(np.hypot(*(nodes[r] - nodes[hid]))) for r in ring_ids]
        rid = ring_ids[int(np.argmin(d))]
        roads.append(Road(rid, hid, resample(_wiggly(nodes[rid], nodes[hid], rng, 0.08)), "outskirts"))
    return RoadNetwork(np.array(nodes), roads, xs, ys).finish()
