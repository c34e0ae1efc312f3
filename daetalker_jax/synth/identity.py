"""Identities of the synthetic corpus: face proportions, colours, hair style and background, by seed.

Colour rules that `measure` relies on (keep them when adding palettes): lips are the only strongly
red, saturated colour (R/G > 2.2); eye whites are the only near-white, unsaturated colour
(min channel > 200); nostrils, lash lines and pupils are the only near-black colours. Skin, hair,
clothes and backgrounds stay outside those ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKIN = ((236, 196, 170), (222, 176, 142), (198, 150, 116), (168, 118, 86), (134, 92, 66), (104, 72, 54))
HAIR = ((52, 44, 40), (86, 62, 44), (122, 94, 66), (196, 166, 112), (150, 148, 146), (70, 66, 74))
IRIS = ((92, 64, 40), (60, 98, 140), (76, 112, 72), (104, 108, 114))
LIPS = ((178, 58, 78), (168, 48, 66), (150, 40, 58), (190, 66, 92))
CLOTHES = ((44, 62, 104), (60, 88, 70), (90, 90, 96), (40, 40, 46), (120, 104, 80), (70, 110, 140))
WALLS = ((120, 136, 150), (150, 140, 120), (98, 120, 112), (140, 128, 140), (170, 160, 140), (110, 110, 118))
HAIR_STYLES = ("short", "long", "bob")


@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic person and their room look the way they do."""
    seed: int
    radii: tuple[float, float, float]   # head ellipsoid (x, y, z) in head units
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    hairline: float                     # head-frame y where the hair starts on the forehead
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    clothes: tuple[int, int, int]
    wall: tuple[int, int, int]
    wall2: tuple[int, int, int]

    @classmethod
    def from_seed(cls, seed: int) -> Identity:
        rng = np.random.default_rng([seed, 7919])
        pick = lambda palette: tuple(int(c) for c in palette[rng.integers(len(palette))])  # noqa: E731
        wall = pick(WALLS)
        shade = rng.uniform(0.7, 0.85)
        return cls(
            seed=seed,
            radii=(float(rng.uniform(0.78, 0.83)), float(rng.uniform(0.98, 1.03)), float(rng.uniform(0.86, 0.9))),
            skin=pick(SKIN), hair=pick(HAIR), hair_style=str(HAIR_STYLES[rng.integers(len(HAIR_STYLES))]),
            hairline=float(rng.uniform(0.46, 0.58)), iris=pick(IRIS), lips=pick(LIPS), clothes=pick(CLOTHES),
            wall=wall, wall2=tuple(int(c * shade) for c in wall),
        )


def background(identity: Identity, size: int) -> np.ndarray:
    """A static, textured room: a wall with a two-tone gradient, plaster noise, a picture frame and a
    skirting line; deterministic per identity."""
    rng = np.random.default_rng([identity.seed, 104729])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    wall, wall2 = np.array(identity.wall, np.float32), np.array(identity.wall2, np.float32)
    img = wall * (1 - 0.6 * y[..., None]) + wall2 * (0.6 * y[..., None])
    # Plaster texture: a sum of random low-frequency waves, identical in every frame.
    tex = np.zeros((size, size), np.float32)
    for _ in range(6):
        fx, fy, ph = rng.uniform(2, 14), rng.uniform(2, 14), rng.uniform(0, 2 * np.pi)
        tex += np.sin(2 * np.pi * (fx * x + fy * y) + ph)
    img *= (1 + 0.035 * tex / 3)[..., None]
    # A picture frame on the wall (darker border, a second colour inside), on one side of the head.
    side = rng.choice([0.04, 0.72])
    x0, y0 = side, rng.uniform(0.06, 0.18)
    x1, y1 = x0 + 0.22, y0 + rng.uniform(0.2, 0.3)
    frame = (x > x0) & (x < x1) & (y > y0) & (y < y1)
    inner = (x > x0 + 0.02) & (x < x1 - 0.02) & (y > y0 + 0.02) & (y < y1 - 0.02)
    img[frame] *= 0.55
    img[inner] = wall2[::-1] * (0.9 + 0.1 * np.sin(25 * x[inner] + 11 * y[inner]))[:, None]
    img[(y > 0.9) & (y < 0.92)] *= 0.8
    return np.clip(img, 0, 190).astype(np.uint8)
