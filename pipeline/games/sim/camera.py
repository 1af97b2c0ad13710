"""Pinhole cameras rigged to the car: world-to-image projection and the ground homographies.

The ground is flat, so the image of the ground texture is one homography per camera pose;
cv2.warpPerspective then renders the whole road surface in one call per detail level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rig:
    """Where a camera sits relative to the car and how it sees."""

    width: int
    height: int
    fov_deg: float  # horizontal field of view
    forward: float  # m ahead of the car's centre (negative = behind)
    up: float  # m above the ground
    pitch_deg: float  # looking down, degrees

    @property
    def focal(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)

    @property
    def horizon(self) -> float:
        """Image row of the horizon (can be negative when looking steeply down)."""
        return self.height / 2 - self.focal * math.tan(math.radians(self.pitch_deg))

    def row_depth(self) -> np.ndarray:
        """Horizontal ground distance from the camera seen at each row's centre (inf above)."""
        v = np.arange(self.height) + 0.5
        below = np.arctan((v - self.height / 2) / self.focal) + math.radians(self.pitch_deg)
        with np.errstate(divide="ignore"):
            return np.where(below > 1e-4, self.up / np.tan(np.maximum(below, 1e-4)), np.inf)

    def ground_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(forward, left) metres from the car's centre of every pixel's ground point (nan above)."""
        r = Pose(0.0, 0.0, self.up, 0.0, math.radians(self.pitch_deg)).rotation()
        u = (np.arange(self.width) + 0.5 - self.width / 2) / self.focal
        v = (np.arange(self.height) + 0.5 - self.height / 2) / self.focal
        dc = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)
        dw = dc @ r
        down = dw[..., 2] < -1e-6
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(down, -self.up / dw[..., 2], np.nan)
        return t * dw[..., 0] + self.forward, t * dw[..., 1]


@dataclass
class Pose:
    """A camera's world pose: position, yaw (heading it looks along) and pitch."""

    x: float
    y: float
    z: float
    yaw: float
    pitch: float  # rad, down positive

    def rotation(self) -> np.ndarray:
        """Rows: image right, image down, optical axis, in world coordinates."""
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        return np.array([
            [sy, -cy, 0.0],
            [-sp * cy, -sp * sy, -cp],
            [cp * cy, cp * sy, -sp],
        ])


def pose_of(rig: Rig, x: float, y: float, yaw: float) -> Pose:
    return Pose(x + rig.forward * math.cos(yaw), y + rig.forward * math.sin(yaw), rig.up, yaw, math.radians(rig.pitch_deg))


def intrinsics(rig: Rig) -> np.ndarray:
    f = rig.focal
    return np.array([[f, 0.0, rig.width / 2], [0.0, f, rig.height / 2], [0.0, 0.0, 1.0]])


def image_to_ground(rig: Rig, pose: Pose) -> np.ndarray:
    """Homography from image pixels to world ground points (x, y); one inverse per frame."""
    r = pose.rotation()
    c = np.array([pose.x, pose.y, pose.z])
    return np.linalg.inv(intrinsics(rig) @ np.column_stack([r[:, 0], r[:, 1], -r @ c]))


def band_homography(img_to_ground: np.ndarray, x0: float, y0: float, res: float, row0: int) -> np.ndarray:
    """Matrix mapping output pixel (u, v - row0) to texture pixel, for WARP_INVERSE_MAP."""
    world_to_tex = np.array([[1 / res, 0.0, -x0 / res], [0.0, 1 / res, -y0 / res], [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, float(row0)], [0.0, 0.0, 1.0]])
    return world_to_tex @ img_to_ground @ shift


def to_camera(pose: Pose, pts: np.ndarray) -> np.ndarray:
    """World points (..., 3) in camera coordinates (right, down, forward)."""
    r = pose.rotation()
    return (pts - np.array([pose.x, pose.y, pose.z])) @ r.T
