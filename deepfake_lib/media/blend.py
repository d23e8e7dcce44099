"""Pseudo-fakes made from real faces, each with its exact mask, for training a detector on
real faces alone:

- :func:`self_blend` (after Shiohara and Yamasaki, "Detecting Deepfakes with Self-Blended
  Images", CVPR 2022): a face blended into itself after colour, frequency (blur, sharpening,
  down-and-up sampling) and geometric (scale, shift) changes, through a randomly deformed,
  grown or shrunk and feathered mask of its landmarks' hull. The blending boundary and the
  colour and resolution mismatch are the traces real face swaps leave.
- :func:`xray_blend` (after Li et al., "Face X-ray for More General Face Forgery Detection",
  CVPR 2020): another person's face, aligned on the landmarks and colour-matched, blended in
  through the same kind of mask.

Images are ``H x W x 3`` ``uint8`` RGB; landmarks an ``(n, 2)`` array of ``x, y`` pixels in
that image (from :func:`deepfake_lib.media.faces.face_landmarks`; only their hull matters).
Masks returned are ``uint8`` 0/1, 1 exactly where the pseudo-fake's pixels come from the other
image (blend weight at least 5%); everywhere else the pseudo-fake equals the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_GROW_FRACTION = 0.06  # the mask grows past the landmarks' hull by at most this x face size
MIN_WEIGHT = 0.05         # blend weights below this are cut to 0, so the mask is exact


@dataclass(frozen=True)
class BlendParams:
    """Ranges the random transforms are drawn from."""

    scale: tuple[float, float] = (0.95, 1.05)
    shift: float = 0.03                       # fraction of the face size
    rgb_shift: float = 20.0                   # +- levels per channel
    brightness: float = 0.1                   # +- gain
    contrast: float = 0.1                     # +- gain around the mean
    hue_shift: float = 5.0                    # +- degrees (OpenCV's 0-180 scale)
    saturation: float = 0.15                  # +- gain
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    downscale: tuple[float, float] = (0.3, 0.7)  # down-and-up sampling factor
    deform: float = 0.04                      # +- mask boundary displacement x face size
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def hull_mask(shape: tuple[int, ...], landmarks: np.ndarray) -> np.ndarray:
    """``uint8`` 0/1 mask of the convex hull of ``landmarks`` in an image of ``shape``."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    return mask


def face_size(landmarks: np.ndarray) -> float:
    """The landmarks' extent in pixels (the larger of width and height, at least 8)."""
    return max(float(np.ptp(landmarks[:, 0])), float(np.ptp(landmarks[:, 1])), 8.0)


def _colour(face: np.ndarray, params: BlendParams, rng: np.random.Generator) -> np.ndarray:
    out = face.astype(np.float32) + rng.uniform(-params.rgb_shift, params.rgb_shift, 3)
    mean = out.mean()
    out = (out - mean) * (1 + rng.uniform(-params.contrast, params.contrast)) + mean
    out *= 1 + rng.uniform(-params.brightness, params.brightness)
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-params.hue_shift, params.hue_shift)) % 180
    hsv[..., 1] *= 1 + rng.uniform(-params.saturation, params.saturation)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


def _frequency(face: np.ndarray, params: BlendParams, rng: np.random.Generator) -> np.ndarray:
    """Blur, sharpen, or down-and-up sample: the resolution mismatch of a synthesised face."""
    choice = rng.integers(3)
    if choice == 0:
        return cv2.GaussianBlur(face, (0, 0), rng.uniform(*params.blur_sigma))
    if choice == 1:
        blurred = cv2.GaussianBlur(face, (0, 0), rng.uniform(*params.blur_sigma))
        return cv2.addWeighted(face, 1.6, blurred, -0.6, 0)
    h, w = face.shape[:2]
    f = rng.uniform(*params.downscale)
    small = cv2.resize(face, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _move(face: np.ndarray, size: float, params: BlendParams, rng: np.random.Generator
          ) -> np.ndarray:
    h, w = face.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, rng.uniform(*params.scale))
    matrix[:, 2] += rng.uniform(-params.shift, params.shift, size=2) * size
    return cv2.warpAffine(face, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def soft_mask(shape: tuple[int, ...], landmarks: np.ndarray, rng: np.random.Generator,
              params: BlendParams = BlendParams()) -> np.ndarray:
    """A float32 mask in [0, 1]: the landmarks' hull with its boundary pushed in and out by a
    smooth random field, randomly grown or shrunk, and feathered; it never reaches more than
    ``MAX_GROW_FRACTION`` of the face size past the hull."""
    hull = hull_mask(shape, landmarks)
    size = face_size(landmarks)
    h, w = shape[:2]
    # smooth random displacement: coarse noise, upsampled
    field = rng.uniform(-1, 1, (2, 4, 4)).astype(np.float32) * params.deform * size
    dx, dy = (cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in field)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mask = cv2.remap(hull, gx + dx, gy + dy, cv2.INTER_NEAREST)
    grow = int(rng.integers(-int(0.04 * size), int(0.03 * size) + 1))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1, 2 * abs(grow) + 1))
    mask = cv2.dilate(mask, kernel) if grow > 0 else cv2.erode(mask, kernel) if grow < 0 else mask
    sigma = rng.uniform(0.005, 0.02) * size
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    limit = cv2.dilate(hull, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(MAX_GROW_FRACTION * size) + 1,) * 2))
    return soft * limit


def _blend(target: np.ndarray, source: np.ndarray, weight: np.ndarray,
           params: BlendParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    weight = weight * rng.choice(params.blend_ratios)
    weight = np.where(weight >= MIN_WEIGHT, weight, 0.0)[..., None]
    fake = target.astype(np.float32) * (1 - weight) + source.astype(np.float32) * weight
    return np.clip(np.round(fake), 0, 255).astype(np.uint8), (weight[..., 0] > 0).astype(np.uint8)


def self_blend(face: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator | None = None,
               params: BlendParams = BlendParams()) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``face`` onto a transformed copy of itself through a landmark mask.

    Returns ``(pseudo-fake RGB uint8, mask uint8 0/1)``."""
    rng = rng or np.random.default_rng()
    landmarks = np.asarray(landmarks, dtype=np.float32)
    source = _move(_frequency(_colour(face, params, rng), params, rng), face_size(landmarks),
                   params, rng)
    return _blend(face, source, soft_mask(face.shape, landmarks, rng, params), params, rng)


def _aligned(donor: np.ndarray, donor_landmarks: np.ndarray, landmarks: np.ndarray,
             shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``donor`` warped so its landmarks fall on ``landmarks`` (a similarity transform), and
    the 0/1 mask of where it has pixels."""
    matrix, _ = cv2.estimateAffinePartial2D(donor_landmarks.astype(np.float32),
                                            landmarks.astype(np.float32), method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("cannot align the donor face")
    h, w = shape[:2]
    warped = cv2.warpAffine(donor, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    valid = cv2.warpAffine(np.ones(donor.shape[:2], np.uint8), matrix, (w, h))
    return warped, valid


def _match_colour(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``source`` with its per-channel mean and spread in LAB made those of ``target``,
    both measured inside ``region``."""
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    tgt = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    inside = region.astype(bool)
    if inside.sum() < 16:
        return source
    s_mean, s_std = src[inside].mean(0), src[inside].std(0) + 1e-3
    t_mean, t_std = tgt[inside].mean(0), tgt[inside].std(0) + 1e-3
    out = (src - s_mean) / s_std * t_std + t_mean
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def xray_blend(face: np.ndarray, landmarks: np.ndarray, donor: np.ndarray,
               donor_landmarks: np.ndarray, rng: np.random.Generator | None = None,
               params: BlendParams = BlendParams()) -> tuple[np.ndarray, np.ndarray]:
    """Blend another person's face (``donor``, with its own landmarks) into ``face``: aligned
    on the landmarks, colour-matched inside the mask, frequency-changed, blended.

    Returns ``(pseudo-fake RGB uint8, mask uint8 0/1)``. Raises ValueError when the donor's
    landmarks cannot be aligned."""
    rng = rng or np.random.default_rng()
    landmarks = np.asarray(landmarks, dtype=np.float32)
    warped, valid = _aligned(donor, np.asarray(donor_landmarks, np.float32), landmarks, face.shape)
    weight = soft_mask(face.shape, landmarks, rng, params) * valid
    source = _match_colour(warped, face, hull_mask(face.shape, landmarks) & valid)
    if rng.random() < 0.5:
        source = _frequency(source, params, rng)
    return _blend(face, source, weight, params, rng)
