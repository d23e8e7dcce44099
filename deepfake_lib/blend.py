"""Self-blended pseudo-fakes (after Shiohara and Yamasaki, "Detecting Deepfakes with
Self-Blended Images", CVPR 2022): a real face blended onto a slightly transformed copy of
itself, through a soft mask built from its facial landmarks. The blending boundary and the
colour/sharpness mismatch are the traces real face swaps leave, and the mask is known
exactly, so a detector can be trained on real faces alone.

Images are ``H x W x 3`` ``uint8`` RGB; landmarks an ``(n, 2)`` array of ``x, y`` pixels in
that image (dlib's 68 points from :func:`deepfake_lib.faces.face_landmarks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_GROW_FRACTION = 0.06  # the mask grows past the landmarks' hull by at most this x face size


@dataclass(frozen=True)
class BlendParams:
    """Ranges the random transforms are drawn from."""

    scale: tuple[float, float] = (0.95, 1.05)
    shift: float = 0.03                       # fraction of the face size
    brightness: float = 0.1                   # +- gain
    hue_shift: float = 5.0                    # +- degrees (OpenCV's 0-180 scale)
    saturation: float = 0.1                   # +- gain
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    blend_ratios: tuple[float, ...] = (0.5, 0.75, 1.0, 1.0, 1.0)


def hull_mask(shape: tuple[int, ...], landmarks: np.ndarray) -> np.ndarray:
    """``uint8`` 0/1 mask of the convex hull of ``landmarks`` in an image of ``shape``."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    return mask


def _transform_source(face: np.ndarray, size: float, params: BlendParams,
                      rng: np.random.Generator) -> np.ndarray:
    h, w = face.shape[:2]
    hsv = cv2.cvtColor(face, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-params.hue_shift, params.hue_shift)) % 180
    hsv[..., 1] *= 1 + rng.uniform(-params.saturation, params.saturation)
    hsv[..., 2] *= 1 + rng.uniform(-params.brightness, params.brightness)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    sigma = rng.uniform(*params.blur_sigma)
    blurred = cv2.GaussianBlur(out, (0, 0), sigma)
    out = blurred if rng.random() < 0.5 else cv2.addWeighted(out, 1.6, blurred, -0.6, 0)  # sharpen
    scale = rng.uniform(*params.scale)
    dx, dy = rng.uniform(-params.shift, params.shift, size=2) * size
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(out, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def soft_mask(shape: tuple[int, ...], landmarks: np.ndarray, rng: np.random.Generator
              ) -> np.ndarray:
    """A float32 mask in [0, 1]: the landmarks' hull, randomly grown or shrunk and feathered,
    never reaching more than ``MAX_GROW_FRACTION`` of the face size past the hull."""
    hull = hull_mask(shape, landmarks)
    size = max(float(np.ptp(landmarks[:, 0])), float(np.ptp(landmarks[:, 1])), 8.0)
    grow = int(rng.integers(-int(0.04 * size), int(0.03 * size) + 1))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1, 2 * abs(grow) + 1))
    mask = cv2.dilate(hull, kernel) if grow > 0 else cv2.erode(hull, kernel) if grow < 0 else hull
    sigma = rng.uniform(0.005, 0.01) * size  # feathering stays inside the growth budget
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    limit = cv2.dilate(hull, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(MAX_GROW_FRACTION * size) + 1,) * 2))
    return soft * limit


def self_blend(face: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator | None = None,
               params: BlendParams = BlendParams()) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``face`` onto a transformed copy of itself through a landmark mask.

    Returns ``(pseudo-fake RGB uint8, mask uint8 0/1)``; the mask is 1 exactly where the
    blend weight is at least 5%, i.e. where the pseudo-fake's pixels come from the copy.
    """
    rng = rng or np.random.default_rng()
    landmarks = np.asarray(landmarks, dtype=np.float32)
    size = max(float(np.ptp(landmarks[:, 0])), float(np.ptp(landmarks[:, 1])), 8.0)
    source = _transform_source(face, size, params, rng)
    weight = soft_mask(face.shape, landmarks, rng) * rng.choice(params.blend_ratios)
    weight = np.where(weight >= 0.05, weight, 0.0)[..., None]
    fake = face.astype(np.float32) * (1 - weight) + source.astype(np.float32) * weight
    return np.clip(np.round(fake), 0, 255).astype(np.uint8), (weight[..., 0] > 0).astype(np.uint8)
