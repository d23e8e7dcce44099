"""Masks of the pixels a deepfake altered: the difference between a fake frame and the same
frame of its original.

``original`` and ``fake`` are aligned ``H x W x 3`` ``uint8`` RGB arrays; masks are
``H x W`` ``uint8`` arrays of 0 and 1. Methods:

- ``seed``: the seed's exact rule, ``cv2.subtract(real, fake) > 10`` on any channel. One-sided
  (subtract clips at 0, so only pixels the fake made darker count) and unsmoothed: compression
  noise all over the frame passes its threshold.
- ``absdiff``: the absolute difference (max over channels) smoothed with a Gaussian, over a
  threshold, then opened (removes compression speckle) and closed and hole-filled (makes the
  altered face one region).
- ``ssim``: 1 - SSIM of the grey images (7-px windows), over a threshold, then the same
  clean-up (the DFDC winner's difference maps).

The default is the one most faithful to the really altered region on FaceForensics++ pairs
(see ``benchmarks/masks.py``).
"""

from __future__ import annotations

import cv2
import numpy as np

METHODS = ("absdiff", "ssim", "seed")
DEFAULT_METHOD = "absdiff"
MIN_FAKE_SHARE = 0.01  # a fake crop with less of its area altered shows no swapped face


def _clean(mask: np.ndarray, size: int) -> np.ndarray:
    """Open (drop specks smaller than ``size``), close, and fill holes."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def diff_mask(original: np.ndarray, fake: np.ndarray, method: str = DEFAULT_METHOD,
              threshold: float | None = None) -> np.ndarray:
    """The mask of pixels where ``fake`` differs from ``original`` (see the module docstring).

    ``threshold``: intensity levels for ``seed`` (default 10) and ``absdiff`` (default 20),
    dissimilarity for ``ssim`` (default 0.25).
    """
    if original.shape != fake.shape or original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"need two aligned H x W x 3 images, got {original.shape} and {fake.shape}")
    if method == "seed":
        t = 10 if threshold is None else threshold
        return (cv2.subtract(original, fake) > t).any(axis=2).astype(np.uint8)
    size = max(3, (min(original.shape[:2]) // 64) | 1)  # clean-up scale grows with the image
    if method == "absdiff":
        t = 20 if threshold is None else threshold
        diff = cv2.absdiff(original, fake).max(axis=2)
        diff = cv2.GaussianBlur(diff, (size, size), 0)
        return _clean((diff > t).astype(np.uint8), size)
    if method == "ssim":
        from skimage.metrics import structural_similarity  # noqa: PLC0415

        t = 0.25 if threshold is None else threshold
        grey_o = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY)
        grey_f = cv2.cvtColor(fake, cv2.COLOR_RGB2GRAY)
        _, sim = structural_similarity(grey_o, grey_f, win_size=7, full=True, data_range=255)
        return _clean(((1.0 - sim) > t).astype(np.uint8), size)
    raise ValueError(f"unknown mask method {method!r}; choose one of {', '.join(METHODS)}")
