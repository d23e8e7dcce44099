"""Face detection, landmarks, 128-d encodings and crops.

Conventions (as in face_recognition): images are ``H x W x 3`` ``uint8`` **RGB**; a box is
``(top, right, bottom, left)`` in integer pixels of the image it was found in, bottom and
right exclusive. Detector scores are in [0, 1] (1.0 where a detector gives none).

Models load when a detector is made (:func:`make_face_detector`, cached per process by
:func:`get_face_detector`), never at import, so importing this module is cheap and a Ray worker
loads each model once.

Detectors, by name:

- ``mtcnn``: facenet-pytorch's MTCNN (weights ship inside its wheel). About 0.1 s per 640-px
  frame on one CPU core; found a face in every shared test video.
- ``mtcnn_fast``: the same at 480 px, ignoring faces under 32 px there (about 1/15 of the
  frame): 0.035 s a frame, for tracks under a time budget.
- ``hog``: dlib's HOG + linear SVM (face_recognition's default). Fast, misses turned and dark
  faces (no face in about a quarter of DFDC videos at 960 px).
- ``cnn``: dlib's CNN (face_recognition's ``model="cnn"``). Better recall, about 16 s per
  960-px frame on this CPU: the seed's setting, kept for comparison.

Each detector works on a copy of the frame shrunk to ``max_side`` pixels on its long side and
returns boxes in the original frame's pixels. :class:`RetryLargerDetector` reruns at a larger
size when nothing is found (small faces in 1080p frames).
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # top, right, bottom, left


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB frame, boxes in that frame's pixels, largest first."""


def check_installed() -> None:
    """Raise ImportError with the fix when the face libraries are missing or broken.

    face_recognition calls ``quit()`` when face_recognition_models (or the ``pkg_resources``
    it needs) is missing; this check runs first so that never happens.
    """
    missing = [m for m in ("dlib", "face_recognition_models", "pkg_resources", "face_recognition")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"missing {', '.join(missing)}: run ./install.sh (dlib comes from "
                          "dlib-bin, face_recognition is installed with --no-deps, setuptools<81 "
                          "provides pkg_resources)")


def _face_recognition():
    check_installed()
    with warnings.catch_warnings():  # face_recognition_models imports pkg_resources
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition  # noqa: PLC0415 - heavy, and quits the process when half-installed

    return face_recognition


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Resize so the long side is at most ``max_side`` px; return the image and its scale."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def clip_box(box: tuple[float, float, float, float], height: int, width: int) -> Box:
    """Round a box to integers and clamp it inside a ``height x width`` image."""
    top, right, bottom, left = box
    top, left = max(0, int(round(top))), max(0, int(round(left)))
    bottom, right = min(height, int(round(bottom))), min(width, int(round(right)))
    return top, max(right, left), max(bottom, top), left


def _scaled(detections: list[tuple[Box, float]], scale: float, shape: tuple[int, ...]
            ) -> list[Detection]:
    out = [Detection(clip_box(tuple(v / scale for v in box), shape[0], shape[1]), float(score))
           for box, score in detections]
    out = [d for d in out if d.box[2] > d.box[0] and d.box[1] > d.box[3]]
    return sorted(out, key=lambda d: -box_area(d.box))


def box_area(box: Box) -> int:
    top, right, bottom, left = box
    return max(0, bottom - top) * max(0, right - left)


class MtcnnDetector:
    """facenet-pytorch's MTCNN; keeps faces scoring at least ``min_score``."""

    name = "mtcnn"

    def __init__(self, max_side: int = 640, min_score: float = 0.9, min_face_px: int = 20,
                 device: str = "cpu"):
        from facenet_pytorch import MTCNN  # noqa: PLC0415 - loads torch

        self.max_side, self.min_score, self.min_face_px = max_side, min_score, min_face_px
        self.model = MTCNN(keep_all=True, device=device, min_face_size=min_face_px,
                           post_process=False)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        small, scale = shrink(rgb, self.max_side)
        if min(small.shape[:2]) < self.min_face_px:  # no face this small is looked for
            return []
        boxes, scores = self.model.detect(np.ascontiguousarray(small))
        if boxes is None:
            return []
        found = [((y1, x2, y2, x1), s) for (x1, y1, x2, y2), s in zip(boxes, scores)
                 if s >= self.min_score]
        return _scaled(found, scale, rgb.shape)


class DlibDetector:
    """dlib's HOG (``model="hog"``) or CNN (``model="cnn"``) through face_recognition."""

    def __init__(self, model: str = "hog", max_side: int = 960, upsample: int = 1):
        self.name, self.max_side, self.upsample = model, max_side, upsample
        self._fr = _face_recognition()
        if model == "cnn":  # load the CNN now, not on the first frame
            self._fr.api.cnn_face_detector  # noqa: B018

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        small, scale = shrink(rgb, self.max_side)
        boxes = self._fr.face_locations(small, self.upsample, self.name)
        return _scaled([(b, 1.0) for b in boxes], scale, rgb.shape)


class RetryLargerDetector:
    """Run ``first``; when it finds nothing, run ``then`` (e.g. the same model at a larger
    size, for small faces). Recall first, at the cost of a second pass only where needed."""

    def __init__(self, first: FaceDetector, then: FaceDetector):
        self.first, self.then = first, then
        self.name = f"{first.name}+{then.name}"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.first.detect(rgb) or self.then.detect(rgb)


DETECTORS = ("auto", "mtcnn", "mtcnn_fast", "hog", "cnn")


def make_face_detector(name: str = "auto", device: str = "cpu") -> FaceDetector:
    """Build a detector by name (see the module docstring). ``auto``: MTCNN at 1280 px
    keeping scores >= 0.8 (finds turned faces in crowds that 640 px misses), retried at
    1920 px on frames where it finds nothing."""
    if name == "auto":
        return RetryLargerDetector(MtcnnDetector(1280, min_score=0.8, device=device),
                                   MtcnnDetector(1920, min_score=0.8, device=device))
    if name == "mtcnn":
        return MtcnnDetector(device=device)
    if name == "mtcnn_fast":  # for tracking under a time budget: faces >= 1/15 of the frame
        return MtcnnDetector(480, min_face_px=32, device=device)
    if name in ("hog", "cnn"):
        return DlibDetector(name)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


@functools.lru_cache(maxsize=4)
def get_face_detector(name: str = "auto", device: str = "cpu") -> FaceDetector:
    """:func:`make_face_detector`, cached: one model per process (per Ray worker)."""
    return make_face_detector(name, device)


def encode_faces(rgb: np.ndarray, boxes: list[Box], num_jitters: int = 1) -> np.ndarray:
    """128-d face_recognition encodings of ``boxes`` in ``rgb``: an ``(n, 128)`` float32 array.

    Encodings of one person lie within about 0.6 of each other (Euclidean).
    ``num_jitters`` > 1 averages re-sampled crops: slower, slightly more stable (the seed: 10).
    """
    if not boxes:
        return np.zeros((0, 128), np.float32)
    fr = _face_recognition()
    encodings = fr.face_encodings(np.ascontiguousarray(rgb), known_face_locations=list(boxes),
                                  num_jitters=num_jitters, model="small")
    return np.asarray(encodings, dtype=np.float32).reshape(len(boxes), 128)


def face_landmarks(rgb: np.ndarray, boxes: list[Box]) -> list[dict[str, list[tuple[int, int]]]]:
    """dlib's 68-point landmarks per box, grouped by feature (``chin``, ``left_eye``, ...),
    as ``(x, y)`` pixel points, exactly as ``face_recognition.face_landmarks`` returns them."""
    if not boxes:
        return []
    fr = _face_recognition()
    return fr.face_landmarks(np.ascontiguousarray(rgb), face_locations=list(boxes), model="large")


def flat_landmarks(rgb: np.ndarray, box: Box) -> list[float]:
    """The landmarks of the face at ``box`` as face_recognition groups dlib's 68 (72 points:
    the lips' corners twice), flattened ``x0, y0, x1, y1, ...``; empty when none are found."""
    marks = face_landmarks(rgb, [box])
    return [float(c) for feature in marks[0].values() for p in feature for c in p] if marks else []


def expand_box(box: Box, margin: float, height: int, width: int, square: bool = True) -> Box:
    """Grow ``box`` by ``margin`` times its size on every side (made square first when
    ``square``), clamped to the image."""
    top, right, bottom, left = box
    cy, cx = (top + bottom) / 2, (left + right) / 2
    h, w = bottom - top, right - left
    if square:
        h = w = max(h, w)
    h, w = h * (1 + 2 * margin), w * (1 + 2 * margin)
    return clip_box((cy - h / 2, cx + w / 2, cy + h / 2, cx - w / 2), height, width)


def crop_face_with_box(rgb: np.ndarray, box: tuple[float, float, float, float], margin: float,
                       size: int) -> tuple[np.ndarray, Box]:
    """The ``size`` x ``size`` square crop around ``box`` grown by ``margin`` (as the prepare
    and score stages crop), and ``box`` in the crop's pixels."""
    int_box = clip_box(box, *rgb.shape[:2])
    top, right, bottom, left = expand_box(int_box, margin, *rgb.shape[:2])
    sy, sx = size / max(1, bottom - top), size / max(1, right - left)
    inner = clip_box(((int_box[0] - top) * sy, (int_box[1] - left) * sx,
                      (int_box[2] - top) * sy, (int_box[3] - left) * sx), size, size)
    crop = cv2.resize(rgb[top:bottom, left:right], (size, size), interpolation=cv2.INTER_AREA)
    return crop, inner


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """JPEG or PNG bytes to an RGB array."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("cannot decode image bytes")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
