"""Masks of the pixels a deepfake altered: the difference between a fake face crop and the same
crop of its original.

``original`` and ``fake`` are aligned ``H x W x 3`` ``uint8`` RGB arrays, made for the prepare
stage's face crops (the face box grown by a margin, 256 px square); masks are ``H x W``
``uint8`` arrays of 0 and 1. Sizes scale with the image's short side. Methods:

- ``adaptive`` (the default): the absolute difference (max over channels), smoothed with a
  Gaussian (sigma 1/160 of the side), over a threshold set by the pair's own noise:
  ``NOISE_FACTOR`` times the median smoothed difference, never under ``MIN_LEVEL`` levels.
  The median is the compression noise as long as the altered region is under half of the
  image (a face crop with prepare's margin: the face box is 39% of it). Then opened (drops
  specks under 1/36 of the side), closed (1/10) and hole-filled (the altered face is one
  region).
- ``seed``: the seed's exact rule, ``cv2.subtract(real, fake) > 10`` on any channel, kept for
  comparison. One-sided (subtract clips at 0, so only pixels the fake made darker count) and
  unsmoothed: compression noise all over the crop passes its threshold.

Chosen on pairs whose altered region is known exactly: ``.venv/bin/python benchmarks/masks.py``
(about 2 CPU-minutes) builds 30 clips (swaps of the built-in sample, self-blends of real video
frames, face swaps between real photos), re-encodes both sides as H.264 yuv420p at CRF 23 and
28 and as MPEG-4 ``mp4v``, and scores 270 crops cut as prepare cuts them. IoU with the exact
mask, mean (median): ``adaptive`` 0.876 (0.922), 93% of crops >= 0.6; sample swaps 0.92,
photo swaps 0.945, self-blends 0.81 (0.69 at CRF 28, the hardest case; inside their altered
region the median difference, about 11 levels, is that of real FaceForensics++ pairs). The
previous default (smoothed difference over a fixed 20 levels, kernel side/64) 0.46
(self-blends 0.15), the dropped SSIM method 0.52, ``seed`` 0.32. No fixed threshold serves
every pair: 10 levels with the same clean-up scores 0.82 but flags 3.4% of a real crop against
itself re-encoded (up to 70%); ``adaptive`` flags 0.05% (at most 2.2%). Factors 2.5 and 3 tie
on IoU (0.877, 0.876); 2.5 flags 0.34% of the real crops (at most 10%). Where a fake differs
from its original all over the crop (FF++ NeuralTextures re-renders the frame: median
difference about 7 levels) the threshold rises with it and keeps only the strongest changes
(the mouth).
"""

from __future__ import annotations

import cv2
import numpy as np

METHODS = ("adaptive", "seed")
DEFAULT_METHOD = "adaptive"
# A fake's crop whose default mask covers less than this share shows no swapped face (an
# unswapped bystander): no exact pseudo-fake's mask is under 2.7%, 99% of unswapped faces
# against themselves re-encoded are under 0.96% (benchmarks/masks.py)
MIN_FAKE_SHARE = 0.01

NOISE_FACTOR = 3.0   # the adaptive threshold: this many times the pair's median difference...
MIN_LEVEL = 5.0      # ...and at least this many levels (identical images give an empty mask)
SMOOTH = 1 / 160     # Gaussian sigma, fraction of the image's short side
OPEN = 1 / 36        # clean-up kernels, fractions of the short side
CLOSE = 1 / 10
SEED_LEVEL = 10


def smoothed_difference(original: np.ndarray, fake: np.ndarray, sigma: float) -> np.ndarray:
    """``float32`` absolute difference, max over channels, Gaussian-smoothed with ``sigma`` px."""
    diff = cv2.absdiff(original, fake).max(axis=2).astype(np.float32)
    return cv2.GaussianBlur(diff, (0, 0), sigma) if sigma > 0 else diff


def noise_level(diff: np.ndarray) -> float:
    """The pair's noise: the median of its difference (most of a face crop is not altered)."""
    return float(np.median(diff))


def _kernel(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def clean(mask: np.ndarray, open_px: int, close_px: int) -> np.ndarray:
    """Open (drop specks narrower than ``open_px``), close (join parts nearer than
    ``close_px``) and fill holes; a size under 2 skips its step."""
    if open_px >= 2:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _kernel(open_px))
    if close_px >= 2:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _kernel(close_px))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def adaptive_mask(original: np.ndarray, fake: np.ndarray, factor: float = NOISE_FACTOR,
                  min_level: float = MIN_LEVEL, smooth: float = SMOOTH, opening: float = OPEN,
                  closing: float = CLOSE) -> np.ndarray:
    """The ``adaptive`` mask (see the module docstring) with all its parameters; ``smooth``,
    ``opening`` and ``closing`` (kernel sizes) are fractions of the image's short side."""
    side = min(original.shape[:2])
    diff = smoothed_difference(original, fake, smooth * side)
    level = max(min_level, factor * noise_level(diff))
    return clean((diff > level).astype(np.uint8), round(opening * side), round(closing * side))


def diff_mask(original: np.ndarray, fake: np.ndarray, method: str = DEFAULT_METHOD,
              threshold: float | None = None) -> np.ndarray:
    """The mask of pixels where ``fake`` differs from ``original`` (see the module docstring).

    ``threshold``: for ``adaptive`` the multiple of the pair's noise (default
    ``NOISE_FACTOR``), for ``seed`` intensity levels (default ``SEED_LEVEL``).
    """
    if original.shape != fake.shape or original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"need two aligned H x W x 3 images, got {original.shape} and "
                         f"{fake.shape}")
    if method == "adaptive":
        return adaptive_mask(original, fake, NOISE_FACTOR if threshold is None else threshold)
    if method == "seed":
        level = SEED_LEVEL if threshold is None else threshold
        return (cv2.subtract(original, fake) > level).any(axis=2).astype(np.uint8)
    raise ValueError(f"unknown mask method {method!r}; choose one of {', '.join(METHODS)}")
