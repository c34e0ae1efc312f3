"""`measure(frame)`: mouth opening and head pose read back from any RGB frame of a rendered face.

It works from pixels only (no sidecar), so it can score generated frames: find the lips (the only
strongly red colour), the eye whites (the only near-white one) and the nostrils (near-black blobs
between eyes and mouth); fit the orthographic camera of the face template to the eye and nostril
centroids (area centroids of planar shapes project exactly under an orthographic camera); then
scan along the mouth's projected vertical axis: the lips' outer edges come from skin/lip colour
unmixing, the gap between the lips from brightness (teeth are brighter, the inner mouth darker than
the lips; video codecs keep brightness sharp while they blur colour), divided by the template's
largest gap.

Accuracy (tests/test_synth_measure.py checks the rendered-frame bounds; yaw within +-20, pitch +-12,
roll +-10 deg, any mouth shape, eyes at least 70% open, every identity palette):
  rendered 256x256: opening within 0.08 of its [0, 1] range (95% within 0.03), angles within
  2.5 deg (95% within 1.5);
  rendered 128x128: opening within 0.25 (95% within 0.11), angles within 5 deg (95% within 3.6).
  From the corpus mp4s (H.264, 4:2:0 colour): at 256, 95% of frames within 0.045 (opening) and
  1.3 deg; at 128, median opening error 0.04 (95% within 0.12) and 95% of angles within 3.7 deg.
The angles (and so the opening) are NaN when an eye looks less than about half open (a blink) or no
face is found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import ConvexHull, QhullError

from daetalker_jax.synth import face
from daetalker_jax.synth.render import INNER_MOUTH, TEETH, default_supersample

_LANDMARKS = face.landmarks_3d()
_POINTS_3D = np.stack([_LANDMARKS[k] for k in ("eye_a", "eye_b", "nostrils")])
_EYE_AREA = face.polygon_area(face.eye_outline(200))
_LUMA = np.array([0.299, 0.587, 0.114])
_TEETH_LUMA, _INNER_LUMA = float(np.array(TEETH) @ _LUMA), float(np.array(INNER_MOUTH) @ _LUMA)
MIN_EYE_VISIBLE = 0.3   # share of an open eye (as seen through thresholding) needed for a pose


@dataclass(frozen=True)
class Measurement:
    opening: float   # mouth opening in [0, 1] (face.MAX_GAP units), NaN if no mouth was found
    yaw: float       # degrees, NaN if the eyes or nostrils were not found
    pitch: float
    roll: float
    scale: float     # pixels per head unit, NaN if no pose


def _components(mask: np.ndarray, bridge: int = 0) -> list[np.ndarray]:
    """Pixel coordinates (N, 2) as (x, y) of each connected component, largest first; pixels closer
    than `bridge` belong to one component."""
    labels, n = ndimage.label(ndimage.binary_dilation(mask, iterations=bridge) if bridge else mask)
    labels[~mask] = 0
    if n == 0:
        return []
    idx = ndimage.find_objects(labels)
    comps = []
    for i, sl in enumerate(idx, start=1):
        ys, xs = np.nonzero(labels[sl] == i)
        comps.append(np.stack([xs + sl[1].start, ys + sl[0].start], -1).astype(np.float64))
    return sorted(comps, key=len, reverse=True)


def _hull(pix: np.ndarray) -> tuple[np.ndarray, float]:
    """Area centroid and area of the convex hull of a pixel set (each pixel a unit square)."""
    corners = (pix[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])[None]).reshape(-1, 2)
    try:
        hull = corners[ConvexHull(corners).vertices]
    except QhullError:
        return pix.mean(0) + 0.5, float(len(pix))
    return face.polygon_centroid(hull), face.polygon_area(hull)


def _weighted_centroid(weight: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Centroid of a blob and its anti-aliased rim, each pixel weighted by its share of the blob's
    peak `weight`: sub-pixel exact for a flat-coloured shape."""
    (x0, y0), (x1, y1) = pix.min(0).astype(int) - 1, pix.max(0).astype(int) + 2
    x0, y0 = max(x0, 0), max(y0, 0)
    patch = weight[y0:y1, x0:x1]
    w = np.clip(patch / max(float(patch.max()), 1e-6), 0, 1)
    w[w < 0.15] = 0
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def _fit_pose(points: np.ndarray) -> tuple[float, float, float, float]:
    """Orthographic PnP: (yaw, pitch, roll, scale) mapping the template landmarks onto `points`."""
    def project(params):
        yaw, pitch, roll, log_s, tx, ty = params
        cam = _POINTS_3D @ face.rotation(yaw, pitch, roll).T
        return np.exp(log_s) * cam[:, :2] * np.array([1.0, -1.0]) + np.array([tx, ty])

    s0 = np.linalg.norm(points[1] - points[0]) / np.linalg.norm(_POINTS_3D[1] - _POINTS_3D[0])
    t0 = points.mean(0) - s0 * (_POINTS_3D[:, :2] * np.array([1.0, -1.0])).mean(0)
    fit = optimize.least_squares(lambda p: (project(p) - points).ravel(),
                                 np.array([0.0, 0.0, 0.0, np.log(s0), *t0]), method="lm")
    yaw, pitch, roll, log_s = fit.x[:4]
    return float(yaw), float(pitch), float(roll), float(np.exp(log_s))


def _edge(alpha: np.ndarray, step: float) -> float:
    """Distance from the start of `alpha` to its first upward crossing of 0.5 (linear interpolation)."""
    above = np.nonzero(alpha >= 0.5)[0]
    if len(above) == 0:
        return np.nan
    i = above[0]
    if i == 0:
        return 0.0
    return step * (i - 1 + (0.5 - alpha[i - 1]) / (alpha[i] - alpha[i - 1]))


def _mouth_gap(img: np.ndarray, lips: np.ndarray, down: np.ndarray, px_per_unit: float) -> float:
    """Height (pixels) of the gap between the lips along the unit image direction `down`. The lips'
    outer edges come from unmixing skin and lip colour."""
    across = np.array([down[1], -down[0]])
    proj = lips @ across
    corner_a, corner_b = lips[np.argmin(proj)], lips[np.argmax(proj)]
    centre = (corner_a + corner_b) / 2 + 0.5
    lip_color = np.median(img[lips[:, 1].astype(int), lips[:, 0].astype(int)], axis=0)
    # Scan along `down` through the centre, from 3 px outside the lips to 3 px outside on the other side.
    rel = lips + 0.5 - centre
    near = np.abs(rel @ across) < 1.5
    if not near.any():
        return np.nan
    along = rel[near] @ down
    step = 0.25
    t = np.arange(along.min() - 3.5, along.max() + 4.5, step)
    pts = centre[None] + t[:, None] * down[None]
    profile = np.stack([ndimage.map_coordinates(img[..., k], [pts[:, 1] - 0.5, pts[:, 0] - 0.5], order=1,
                                                mode="nearest") for k in range(3)], -1)

    def alpha(prof: np.ndarray) -> np.ndarray:
        skin = prof[:4].mean(0)
        axis = lip_color - skin
        return (prof - skin) @ axis / max(float(axis @ axis), 1e-6)

    top = _edge(alpha(profile), step)
    bottom = _edge(alpha(profile[::-1]), step)
    if not (np.isfinite(top) and np.isfinite(bottom)):
        return np.nan
    # Between the lips' outer edges, brightness alone (which codecs keep sharp) separates the lips
    # from the teeth (brighter) and the inner mouth (darker): share = how far a sample is from lip
    # brightness towards either, in [0, 1]; the gap spans the outermost 0.5 crossings.
    # Start half a lip inside each outer edge, clear of any skin the colour edges let in.
    first = int(np.ceil((top + 0.5 * face.UPPER_LIP * px_per_unit) / step))
    last = len(t) - int(np.ceil((bottom + 0.5 * face.LOWER_LIP * px_per_unit) / step))
    inner = profile[first:max(first + 1, last)] @ _LUMA
    lip_l = float(lip_color @ _LUMA)
    share = np.clip(np.maximum((inner - lip_l) / (_TEETH_LUMA - lip_l), (lip_l - inner) / (lip_l - _INNER_LUMA)), 0, 1)
    if share.max() < 0.9:   # a slit thinner than a pixel: integrate its partial coverage instead
        return float(share.sum() * step)
    return (len(share) - 1) * step - _edge(share, step) - _edge(share[::-1], step)


def _find_lips(img: np.ndarray) -> np.ndarray | None:
    """Pixel coordinates of both lips. Hysteresis: lips are weakly red regions holding strongly red
    pixels (video codecs subsample colour, which washes out thin lips)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    weak = (r > 1.65 * g) & (r > 1.3 * b) & (r > 80)
    labels, _ = ndimage.label(weak)
    strong = np.unique(labels[(r > 2.2 * g) & (r > 1.5 * b) & (r > 110) & weak])
    parts = _components(np.isin(labels, strong[strong > 0]))
    if not parts or len(parts[0]) < 4:
        return None
    main = parts[0]
    (x0, _), (x1, _) = main.min(0), main.max(0)

    def near(c: np.ndarray) -> bool:   # the other lip, when the mouth is open
        return x0 - 2 <= c[:, 0].mean() <= x1 + 2 and abs(c[:, 1].mean() - main[:, 1].mean()) < 1.5 * (x1 - x0)

    return np.concatenate([c for c in parts if near(c)])


def _find_eyes(img: np.ndarray, mouth_top: float) -> tuple[list[np.ndarray], float] | None:
    """Centroids of the two eyes (image-left first) and the head scale (pixels per head unit), or
    None when an eye is missing or (nearly) closed."""
    white = (img.min(-1) > 200) & (np.ptp(img, -1) < 40)
    white[int(mouth_top):] = False
    bridge = int(np.ceil(0.012 * img.shape[1])) + 1  # joins the white on both sides of the iris
    eyes = [c for c in _components(white, bridge)[:2] if len(c) >= 3]
    if len(eyes) < 2:
        return None
    hulls = sorted((_hull(c) for c in eyes), key=lambda h: h[0][0])
    centres = [h[0] for h in hulls]
    unit = np.linalg.norm(centres[1] - centres[0]) / np.linalg.norm(_POINTS_3D[1] - _POINTS_3D[0])
    if min(h[1] for h in hulls) < MIN_EYE_VISIBLE * _EYE_AREA * unit**2:   # closing: centroids unreliable
        return None
    return centres, unit


def _find_nostrils(img: np.ndarray, eyes: list[np.ndarray], unit: float, mouth_top: float) -> np.ndarray | None:
    """Midpoint of the nostrils: dark blobs below the eyes' lower lids, above the lips, between the eyes."""
    y0, y1 = int(max(e[1] for e in eyes) + (face.EYE_DOWN + 0.03) * unit) + 1, int(mouth_top) - 1
    margin = 0.1 * (eyes[1][0] - eyes[0][0])
    x0, x1 = int(eyes[0][0] + margin), int(eyes[1][0] - margin) + 1
    brightness = img[y0:y1, x0:x1].max(-1)
    if brightness.size == 0:
        return None
    # Black top-hat: darkness relative to the local surroundings, blind to broad shading.
    k = max(3, int(0.16 * unit))
    contrast = np.zeros(img.shape[:2], np.float32)
    closed = ndimage.grey_closing(brightness, size=(k, k))
    contrast[y0:y1, x0:x1] = (closed - brightness) / np.maximum(closed, 1)
    blobs = _components(contrast > 0.35)[:2]   # the two nostrils, or one blob when they touch
    return _weighted_centroid(contrast, np.concatenate(blobs)) if blobs else None


def measure(frame: np.ndarray) -> Measurement:
    """Estimates mouth opening, yaw, pitch and roll from one RGB frame (uint8 or float in [0, 255])."""
    img = np.asarray(frame, np.float32)
    nan = Measurement(np.nan, np.nan, np.nan, np.nan, np.nan)
    lips = _find_lips(img)
    if lips is None:
        return nan
    mouth_top = lips[:, 1].min()
    found = _find_eyes(img, mouth_top)
    if found is None:
        return nan
    eyes, unit = found
    nose = _find_nostrils(img, eyes, unit, mouth_top)
    if nose is None:
        return nan

    yaw, pitch, roll, scale = _fit_pose(np.stack([*eyes, nose]))
    rot = face.rotation(yaw, pitch, roll)
    v_img = (rot @ -face.PLANES["mouth"].v)[:2] * np.array([1.0, -1.0])   # image direction of the mouth's "down"
    foreshortening = float(np.linalg.norm(v_img))
    # PIL fills polygons one drawing pixel too large: the lips, drawn last, cover that much of the gap.
    gap = _mouth_gap(img, lips, v_img / foreshortening, scale * foreshortening)
    gap += 1 / default_supersample(img.shape[1])
    opening = gap / (scale * foreshortening) / face.MAX_GAP
    return Measurement(float(np.clip(opening, 0, 1)) if np.isfinite(opening) else np.nan,
                       yaw, pitch, roll, scale)


def measure_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`measure` over (n, S, S, 3) frames: (n,) mouth opening and (n, 3) yaw/pitch/roll, NaN where unreadable.
    Module level (and light to import) so worker processes can run it."""
    m = [measure(f) for f in frames]
    return np.array([x.opening for x in m]), np.array([(x.yaw, x.pitch, x.roll) for x in m]).reshape(-1, 3)
