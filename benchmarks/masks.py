"""Masks benchmark: which difference method is most faithful to the really altered region?

    .venv/bin/python benchmarks/masks.py

On the FaceForensics++ pairs of ../shared/data/videos/ffpp (only the face is altered), for
frames spread over each video: the share of mask pixels inside the face box (with the prepare
stage's margin), the mask's cover of that box, and masks of real/real pairs: a frame against
itself, and against itself re-compressed as JPEG quality 85 (should be empty).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402

from deepfake_lib import faces, masks, video  # noqa: E402

PAIRS = [("519.mp4", "519_515.mp4", "Deepfakes"), ("634.mp4", "634_660.mp4", "FaceSwap"),
         ("004.mp4", "004_982.mp4", "NeuralTextures")]


def recompressed(rgb: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main() -> None:
    detector = faces.make_detector("mtcnn")
    folder = SHARED / "videos" / "ffpp"
    frames = {}
    for original, fake, _ in PAIRS:
        n = min(video.probe(str(folder / original)).frame_count, video.probe(str(folder / fake)).frame_count)
        idx = list(np.linspace(0, n - 1, 8).astype(int))
        frames[fake] = (video.read_frames(str(folder / original), idx),
                        video.read_frames(str(folder / fake), idx), idx)
    rows = []
    for method in masks.METHODS:
        pooled_in = pooled_all = 0
        per_pair = []
        same = recomp = 0.0
        for original, fake, kind in PAIRS:
            reals, fakes, idx = frames[fake]
            inside = total = cover = 0.0
            for i in idx:
                box = detector.detect(reals[i])[0].box
                top, right, bottom, left = faces.expand_box(box, 0.3, *reals[i].shape[:2])
                m = masks.diff_mask(reals[i], fakes[i], method)
                inside += m[top:bottom, left:right].sum()
                total += m.sum()
                cover += m[top:bottom, left:right].mean() / len(idx)
                same += masks.diff_mask(reals[i], reals[i].copy(), method).mean() / (3 * len(idx))
                recomp += masks.diff_mask(reals[i], recompressed(reals[i]), method).mean() / (3 * len(idx))
            per_pair.append(inside / total if total else float("nan"))
            pooled_in, pooled_all = pooled_in + inside, pooled_all + total
            rows.append([method, kind, per_pair[-1], cover, "-", "-"])
        rows.append([method, "pooled", pooled_in / pooled_all, "-", same, recomp])
    print_table("Masks on FF++ pairs, 8 frames each (target for the default, "
                f"{masks.DEFAULT_METHOD}: >= 0.9 inside, empty on real/real)",
                ["method", "pair", "share inside face box", "cover of face box",
                 "real/itself mask share", "real/recompressed mask share"], rows)


if __name__ == "__main__":
    main()
