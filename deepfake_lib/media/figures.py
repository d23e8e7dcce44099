"""Figures as PNG bytes: frame grids, face thumbnails placed at 2-D coordinates, coloured
cluster scatters, per-cluster montages. Images in are RGB ``uint8``.

Thumbnail canvases are drawn with OpenCV (thousands of faces in well under a second);
matplotlib (Agg, no screen needed) draws the scatter with axes and a legend.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of an RGB (``H x W x 3``) or single-channel (``H x W``) ``uint8`` image."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3
                           else image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def grid(images: list[np.ndarray], cols: int, cell: tuple[int, int],
         background: int = 255) -> np.ndarray:
    """Tile images (each resized to ``cell`` = (width, height)) row by row."""
    rows = max(1, math.ceil(len(images) / cols))
    w, h = cell
    canvas = np.full((rows * h, cols * w, 3), background, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = cv2.resize(img, (w, h),
                                                                   interpolation=cv2.INTER_AREA)
    return canvas


def montage(faces: list[np.ndarray], cols: int = 10, px: int = 96) -> np.ndarray:
    """Faces in a ``cols``-wide grid of ``px``-pixel squares (the seed: 10 x 10 of 96 px)."""
    return grid(faces, cols, (px, px))


def thumbnail_scatter(coords: np.ndarray, thumbs: list[np.ndarray], size: int = 2000,
                      thumb_px: int = 40, labels: np.ndarray | None = None) -> np.ndarray:
    """Place each thumbnail at its 2-D coordinate on a ``size`` square canvas; with
    ``labels``, frame each in its cluster's colour (noise: black)."""
    canvas = np.full((size, size, 3), 255, np.uint8)
    if len(coords) == 0:
        return canvas
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pos = ((coords - lo) / span * (size - thumb_px)).astype(int)
    colours = cluster_colours(labels) if labels is not None else None
    for i, ((x, y), thumb) in enumerate(zip(pos, thumbs)):
        y = size - thumb_px - y  # y up, as in a plot
        canvas[y:y + thumb_px, x:x + thumb_px] = cv2.resize(thumb, (thumb_px, thumb_px),
                                                            interpolation=cv2.INTER_AREA)
        if colours is not None:
            cv2.rectangle(canvas, (x, y), (x + thumb_px - 1, y + thumb_px - 1),
                          colours[i].tolist(), 2)
    return canvas


def cluster_colours(labels: np.ndarray) -> np.ndarray:
    """One RGB colour per label (tab20, cycled); noise (-1) black."""
    from matplotlib import colormaps  # noqa: PLC0415

    table = (np.array(colormaps["tab20"].colors) * 255).astype(np.uint8)
    out = table[np.maximum(labels, 0) % len(table)]
    out[labels < 0] = 0
    return out


def cluster_scatter(coords: np.ndarray, labels: np.ndarray, title: str) -> bytes:
    """A scatter of 2-D coordinates coloured by cluster, noise in black; PNG bytes."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(9, 9), dpi=110)
    noise = labels < 0
    colours = cluster_colours(labels) / 255.0
    ax.scatter(coords[~noise, 0], coords[~noise, 1], c=colours[~noise], s=8, linewidths=0)
    ax.scatter(coords[noise, 0], coords[noise, 1], c="black", s=8, marker="x", linewidths=0.6,
               label=f"noise ({int(noise.sum())})")
    n_clusters = len(set(labels[~noise].tolist()))
    ax.set_title(f"{title}: {n_clusters} clusters, {int(noise.sum())} noise faces")
    ax.legend(loc="upper right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
