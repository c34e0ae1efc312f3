"""Renders one talking-face frame: a ray-cast, Lambert-shaded head ellipsoid with hair, planar facial
features (eyes with lids, brows, a shaded nose solid, lips, inner mouth and teeth), ears, neck and
shoulders, over the identity's static background. Orthographic camera; anti-aliased by drawing at
`supersample` times the size and box-filtering down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from daetalker_jax.synth import face
from daetalker_jax.synth.identity import Identity, background

LIGHT = np.array([-0.45, 0.55, 0.7]) / np.linalg.norm([-0.45, 0.55, 0.7])
EYE_WHITE, PUPIL, LASH = (244, 242, 238), (20, 16, 16), (28, 20, 20)
NOSTRIL, INNER_MOUTH, TEETH = (16, 6, 8), (58, 12, 22), (222, 212, 182)
HEAD_SCALE, HEAD_CENTRE = 0.24, (0.5, 0.41)   # head units -> fraction of the frame; head centre at rest


@dataclass(frozen=True)
class FrameState:
    """What changes from frame to frame."""
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    opening: float = 0.0
    width: float = 0.5
    rounding: float = 0.0
    blink: float = 0.0
    shoulder: tuple[float, float] = (0.0, 0.0)


def _shade(normal: np.ndarray) -> np.ndarray:
    return 0.38 + 0.62 * np.clip(normal @ LIGHT, 0, None)


def _rgb(color, k: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * k, 0, 255)) for c in color)


def default_supersample(size: int) -> int:
    """Drawing scale used for anti-aliasing. PIL fills polygons inclusively, which grows every shape
    by one drawing pixel (1/supersample output pixels) in width and height; `measure` corrects it."""
    return 4 if size <= 128 else 2


class Renderer:
    """Renders frames of one identity at one size (64..512 pixels, square)."""

    def __init__(self, identity: Identity, size: int, supersample: int | None = None):
        if not 64 <= size <= 512:
            raise ValueError(f"size must be within 64..512, got {size}")
        self.identity, self.size = identity, size
        self.ss = supersample or default_supersample(size)
        self.canvas = size * self.ss
        self.scale = HEAD_SCALE * self.canvas
        self.cx, self.cy = HEAD_CENTRE[0] * self.canvas, HEAD_CENTRE[1] * self.canvas
        bg = Image.fromarray(background(identity, size)).resize((self.canvas, self.canvas), Image.BILINEAR)
        self.bg = np.asarray(bg)
        self.radii = np.array(identity.radii)

    # -- geometry ---------------------------------------------------------------------------------
    def _to_image(self, world: np.ndarray) -> np.ndarray:
        return np.stack([self.cx + self.scale * world[..., 0], self.cy - self.scale * world[..., 1]], -1)

    def _head_to_world(self, pts: np.ndarray, rot: np.ndarray, offset: np.ndarray) -> np.ndarray:
        return (pts - face.NECK_PIVOT) @ rot.T + face.NECK_PIVOT + offset

    # -- drawing ----------------------------------------------------------------------------------
    def face_box(self, st: FrameState) -> tuple[float, float, float, float]:
        """The head's box (x0, y0, x1, y1) in output pixels: the exact bounds of the projected ellipsoid,
        whose half-extent along image axis i is sqrt(sum_j (R_ij r_j)^2)."""
        rot = face.rotation(st.yaw, st.pitch, st.roll)
        centre = self._to_image(self._head_to_world(np.zeros(3), rot, np.array([*st.shoulder, 0.0])))
        half = self.scale * np.sqrt(((rot[:2] * self.radii) ** 2).sum(1))
        x0, y0 = (centre - half) / self.ss
        x1, y1 = (centre + half) / self.ss
        return float(x0), float(y0), float(x1), float(y1)

    def render(self, st: FrameState) -> np.ndarray:
        """Returns the (size, size, 3) uint8 frame."""
        rot = face.rotation(st.yaw, st.pitch, st.roll)
        offset = np.array([st.shoulder[0], st.shoulder[1], 0.0])
        ident = self.identity
        img = Image.fromarray(self.bg.copy())
        draw = ImageDraw.Draw(img)
        poly = lambda pts, color: draw.polygon([tuple(p) for p in pts], fill=color)  # noqa: E731
        head = lambda pts: self._to_image(self._head_to_world(pts, rot, offset))     # noqa: E731

        # Shoulders and torso (world frame, they only follow the shoulder offset), then the neck.
        torso = np.array([[-0.42, -1.3], [-0.9, -1.45], [-1.5, -1.62], [-1.85, -1.9], [-2.1, -2.6], [-2.2, -4],
                          [2.2, -4], [2.1, -2.6], [1.85, -1.9], [1.5, -1.62], [0.9, -1.45], [0.42, -1.3]])
        torso = torso + offset[:2] * np.array([1.0, 0.6])
        poly(self._to_image(torso), _rgb(ident.clothes))
        neck_top = head(np.array([[-0.3, -0.55, -0.05], [0.3, -0.55, -0.05]]))
        neck_bottom = self._to_image(np.array([[0.33, -1.5], [-0.33, -1.5]]) + offset[:2] * [1.0, 0.6])
        poly(np.concatenate([neck_top, neck_bottom]), _rgb(ident.skin, 0.72))
        collar = np.array([[-0.36, -1.33], [0.36, -1.33], [0.0, -1.8]]) + offset[:2] * [1.0, 0.6]
        poly(self._to_image(collar), _rgb(ident.skin, 0.78))
        draw.line([tuple(p) for p in self._to_image(collar[[0, 2, 1]])], fill=_rgb(ident.clothes, 0.6),
                  width=max(1, int(0.03 * self.scale)))

        if ident.hair_style in ("long", "bob"):
            low = -1.45 if ident.hair_style == "long" else -0.8
            back = np.array([[-0.84, 0.3, -0.35], [-0.92, low, -0.35], [0.92, low, -0.35], [0.84, 0.3, -0.35]])
            poly(head(back), _rgb(ident.hair, 0.7))
        for name in ("ear_a", "ear_b"):
            poly(head(face.PLANES[name].lift(face.ellipse(0, 0, 0.1, 0.17))), _rgb(ident.skin, 0.8))

        canvas = np.array(img)
        self._paint_head(canvas, rot, offset)
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        self._draw_features(draw, st, rot, head)
        return np.asarray(img.reduce(self.ss))

    def _paint_head(self, canvas: np.ndarray, rot: np.ndarray, offset: np.ndarray) -> None:
        """Ray-casts the head ellipsoid (orthographic rays along -z) into `canvas`."""
        centre = self._to_image(self._head_to_world(np.zeros(3), rot, offset))
        reach = 1.1 * self.radii.max() * self.scale
        x0, y0 = (max(0, int(c - reach)) for c in centre)
        x1, y1 = (min(self.canvas, int(c + reach) + 1) for c in centre)
        xs = (((np.arange(x0, x1) + 0.5) - self.cx) / self.scale - offset[0]).astype(np.float32)
        ys = (-((np.arange(y0, y1) + 0.5) - self.cy) / self.scale - offset[1]).astype(np.float32)
        # The head-frame point hit by each pixel's ray at world z=0 is affine in (x, y): q = x r0 + y r1 + q0.
        pv = face.NECK_PIVOT
        q0 = (-pv @ rot + pv).astype(np.float32)
        rot32, r2 = rot.astype(np.float32), (self.radii ** 2).astype(np.float32)
        d = rot32[2]                                                     # head-frame direction of world +z
        q = [xs[None, :] * rot32[0, k] + (ys[:, None] * rot32[1, k] + q0[k]) for k in range(3)]
        a = float(np.sum(d * d / r2))
        b = 2 * sum(q[k] * (d[k] / r2[k]) for k in range(3))
        c = sum(q[k] * q[k] / r2[k] for k in range(3)) - 1
        disc = b * b - 4 * a * c
        hit = disc > 0
        if not hit.any():
            return
        t = (np.sqrt(disc[hit]) - b[hit]) / (2 * a)
        p = [q[k][hit] + t * d[k] for k in range(3)]
        normal = sum(np.multiply.outer(p[k] / r2[k], rot32[:, k]) for k in range(3))
        shade = 0.38 + 0.62 * np.clip(normal @ LIGHT.astype(np.float32) / np.linalg.norm(normal, axis=-1), 0, None)
        ident = self.identity
        is_hair = p[1] > ident.hairline - 0.9 * np.clip(0.35 - p[2], 0, 1.2)
        shade[is_hair] *= 0.9 + 0.1 * np.sin(40 * p[0][is_hair] / (p[1][is_hair] + 1.4))  # strands
        base = np.where(is_hair[:, None], np.float32(ident.hair), np.float32(ident.skin))
        color = base * shade[:, None]
        region = canvas[y0:y1, x0:x1]
        region[hit] = np.clip(color, 0, 255).astype(np.uint8)

    def _draw_features(self, draw: ImageDraw.ImageDraw, st: FrameState, rot: np.ndarray, head) -> None:
        ident, planes = self.identity, face.PLANES
        facing = lambda plane: (rot @ plane.normal)[2] > 0.05  # noqa: E731
        poly = lambda plane, pts, color: draw.polygon([tuple(p) for p in head(plane.lift(pts))], fill=color)  # noqa: E731
        skin_at = lambda plane: _rgb(ident.skin, float(_shade(rot @ plane.normal)))  # noqa: E731

        eyes = face.eye_shapes(st.blink)
        for side in ("a", "b"):
            brow, eye = planes[f"brow_{side}"], planes[f"eye_{side}"]
            if facing(brow):
                poly(brow, face.brow_shape(), _rgb(ident.hair, 0.55))
            if not facing(eye):
                continue
            poly(eye, eyes["white"], EYE_WHITE)
            poly(eye, eyes["iris"], ident.iris)
            poly(eye, eyes["pupil"], PUPIL)
            lid = skin_at(eye)
            poly(eye, eyes["upper_lid"], lid)
            poly(eye, eyes["lower_lid"], lid)
            poly(eye, eyes["lash"], LASH)

        # Nose: a small shaded solid, faces painted back to front.
        verts = {k: np.array(v) for k, v in face.NOSE.items()}
        faces = []
        for names in face.NOSE_FACES:
            tri = np.stack([verts[n] for n in names])
            normal = rot @ np.cross(tri[1] - tri[0], tri[2] - tri[0])
            normal /= np.linalg.norm(normal)
            if normal[2] > 0:
                faces.append(((tri @ rot.T)[:, 2].mean(), tri, normal))
        # Subtle shading (relative to the face front) keeps the nostrils the only dark thing there.
        front = float(_shade(rot[:, 2]))
        for _, tri, normal in sorted(faces, key=lambda f: f[0]):
            k = front * (0.9 + 0.16 * max(float(normal @ LIGHT), 0.0))
            draw.polygon([tuple(p) for p in head(tri)], fill=_rgb(ident.skin, k))
        if facing(planes["nostrils"]):
            for nostril in face.nostril_shapes():
                poly(planes["nostrils"], nostril, NOSTRIL)

        mouth = planes["mouth"]
        if facing(mouth):
            shapes = face.mouth_shapes(st.opening, st.width, st.rounding)
            poly(mouth, shapes["inner"], INNER_MOUTH)
            poly(mouth, shapes["teeth"], TEETH)
            poly(mouth, shapes["upper_lip"], ident.lips)
            poly(mouth, shapes["lower_lip"], _rgb(ident.lips, 1.06))
