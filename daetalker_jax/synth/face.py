"""The 3-D face template shared by the renderer and by `measure`.

Head frame: x to the image right, y up, z towards the camera; the head is an ellipsoid of radii about
(0.8, 1, 0.88) around the origin. Facial features are planar shapes laid on small planes (centre +
in-plane axes u, v) in front of the ellipsoid, so an orthographic camera maps each of them by an affine
map: the area centroid of a projected feature is the projection of its 3-D centroid. `measure` uses
exactly that to recover the pose from the eyes and nostrils.

Pose convention (degrees): yaw > 0 turns the face towards the image right, pitch > 0 lifts the chin
(face up), roll > 0 tilts the head counter-clockwise in the image. R = Rz(roll) Rx(pitch) Ry(yaw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NECK_PIVOT = np.array([0.0, -0.75, -0.15])  # the head turns about this head-frame point

# Mouth (in its plane, head units). The inner gap at the centre is MAX_GAP * opening; the lips'
# thickness at the centre is UPPER_LIP + LOWER_LIP whatever the shape, which is what `measure` uses.
MAX_GAP = 0.26
UPPER_LIP, LOWER_LIP = 0.075, 0.085
UPPER_SHARE = 0.3  # the upper lip takes this share of the opening, the jaw the rest

EYE_HALF_W, EYE_UP, EYE_DOWN, IRIS_R, LASH_W = 0.17, 0.085, 0.065, 0.05, 0.02


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head-to-camera rotation for angles in degrees (see the module docstring)."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class Plane:
    """A feature plane: points are centre + a * u + b * v."""
    centre: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.u, self.v)

    def lift(self, pts2d: np.ndarray) -> np.ndarray:
        """(N, 2) in-plane coordinates -> (N, 3) head-frame points."""
        return self.centre + pts2d[:, :1] * self.u + pts2d[:, 1:2] * self.v


def _plane(centre, yaw_deg: float = 0.0, tilt_deg: float = 0.0) -> Plane:
    """A plane facing +z, turned by yaw_deg about y, then tilted by tilt_deg (normal goes down)."""
    r = rotation(yaw_deg, -tilt_deg, 0.0)
    return Plane(np.asarray(centre, float), r @ np.array([1.0, 0, 0]), r @ np.array([0, 1.0, 0]))


PLANES = {
    "eye_a": _plane((-0.31, 0.18, 0.78), yaw_deg=-14),   # the eye on the image left
    "eye_b": _plane((0.31, 0.18, 0.78), yaw_deg=14),
    "brow_a": _plane((-0.32, 0.385, 0.80), yaw_deg=-14),
    "brow_b": _plane((0.32, 0.385, 0.80), yaw_deg=14),
    "nostrils": _plane((0.0, -0.175, 1.03), tilt_deg=22),
    "mouth": _plane((0.0, -0.46, 0.82), tilt_deg=8),
    "ear_a": _plane((-0.78, 0.02, -0.08), yaw_deg=-55),
    "ear_b": _plane((0.78, 0.02, -0.08), yaw_deg=55),
}

NOSTRIL_X, NOSTRIL_R = 0.052, (0.04, 0.03)
NOSE = {  # head-frame vertices of the nose solid
    "root": (0.0, 0.14, 0.86), "tip": (0.0, -0.09, 1.13),
    "ala_a": (-0.105, -0.17, 0.95), "ala_b": (0.105, -0.17, 0.95), "base": (0.0, -0.2, 1.0),
}
NOSE_FACES = (("root", "ala_a", "tip"), ("root", "tip", "ala_b"), ("tip", "ala_a", "base"), ("tip", "base", "ala_b"))


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], -1)


def _dome(x: np.ndarray, half_w: float, power: float) -> np.ndarray:
    return np.clip(1 - (x / half_w) ** 2, 0, 1) ** power


def eye_arcs(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """The almond's upper arc (left->right) and lower arc (right->left), corners included."""
    x = np.linspace(-EYE_HALF_W, EYE_HALF_W, n)
    up = np.stack([x, EYE_UP * _dome(x, EYE_HALF_W, 0.8)], -1)
    down = np.stack([x[::-1], -EYE_DOWN * _dome(x[::-1], EYE_HALF_W, 0.8)], -1)
    return up, down


def eye_outline(n: int = 24) -> np.ndarray:
    """The almond (convex) as one closed polygon."""
    up, down = eye_arcs(n)
    return np.concatenate([up, down[1:-1]])


def _shoelace(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = pts[:, 0], pts[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    return x + xn, y + yn, x * yn - xn * y


def polygon_area(pts: np.ndarray) -> float:
    return abs(float(_shoelace(pts)[2].sum())) / 2


def polygon_centroid(pts: np.ndarray) -> np.ndarray:
    sx, sy, cross = _shoelace(pts)
    return np.array([(sx * cross).sum(), (sy * cross).sum()]) / (3 * cross.sum())


EYE_CENTROID = polygon_centroid(eye_outline(200))  # in-plane; blinking shrinks the eye about it


def eye_shapes(blink: float) -> dict[str, np.ndarray]:
    """In-plane polygons of one eye: white, iris, pupil, the two lids and the lash line.

    A blink shrinks the visible white vertically about the almond's centroid, so the visible eye's
    centroid does not move while the eye closes.
    """
    up, down = eye_arcs()
    c = EYE_CENTROID
    squeeze = np.array([1.0, float(np.clip(1 - blink, 0, 1))])
    up_vis, down_vis = c + (up - c) * squeeze, c + (down - c) * squeeze
    return {
        "white": np.concatenate([up, down[1:-1]]),
        "iris": ellipse(c[0], c[1], IRIS_R, IRIS_R),
        "pupil": ellipse(c[0], c[1], IRIS_R * 0.45, IRIS_R * 0.45, 16),
        "upper_lid": np.concatenate([up, up_vis[::-1]]),
        "lower_lid": np.concatenate([down, down_vis[::-1]]),
        "lash": np.concatenate([up_vis, (up_vis + [0, LASH_W])[::-1]]),  # a strip just above the white
    }


def brow_shape(n: int = 12) -> np.ndarray:
    x = np.linspace(-0.14, 0.14, n)
    arch = 0.035 * _dome(x, 0.16, 1.0)
    return np.concatenate([np.stack([x, arch + 0.022], -1), np.stack([x[::-1], arch[::-1] - 0.02], -1)])


def mouth_shapes(opening: float, width: float, rounding: float, n: int = 24) -> dict[str, np.ndarray]:
    """In-plane polygons of the mouth: outer lips, the inner mouth and the upper teeth.

    opening in [0, 1] scales the inner gap; width spreads and rounding narrows the corners. The outer
    outline is convex and the corners stay on the plane's x axis.
    """
    hw = 0.2 + 0.05 * width - 0.06 * rounding
    gap = MAX_GAP * float(np.clip(opening, 0, 1))
    x = np.linspace(-hw, hw, n)
    shape = np.sqrt(np.clip(1 - (x / hw) ** 2, 0, 1))
    up_in = UPPER_SHARE * gap * shape
    low_in = -(1 - UPPER_SHARE) * gap * shape
    up_out = up_in + UPPER_LIP * _dome(x, hw, 0.7)
    low_out = low_in - LOWER_LIP * _dome(x, hw, 0.7)
    teeth = np.maximum(up_in - 0.045 * shape, low_in)
    return {
        "upper_lip": np.concatenate([np.stack([x, up_out], -1), np.stack([x[::-1], up_in[::-1]], -1)]),
        "lower_lip": np.concatenate([np.stack([x, low_in], -1), np.stack([x[::-1], low_out[::-1]], -1)]),
        "inner": np.concatenate([np.stack([x, up_in], -1), np.stack([x[::-1], low_in[::-1]], -1)]),
        "teeth": np.concatenate([np.stack([x, up_in], -1), np.stack([x[::-1], teeth[::-1]], -1)]),
    }


def nostril_shapes() -> list[np.ndarray]:
    return [ellipse(sx * NOSTRIL_X, 0.0, *NOSTRIL_R, 16) for sx in (-1, 1)]


def landmarks_3d() -> dict[str, np.ndarray]:
    """Head-frame 3-D centroids of the features `measure` detects: the eye centres and the midpoint
    of the two nostrils."""
    return {
        "eye_a": PLANES["eye_a"].lift(EYE_CENTROID[None])[0],
        "eye_b": PLANES["eye_b"].lift(EYE_CENTROID[None])[0],
        "nostrils": PLANES["nostrils"].centre,
    }
