"""Masks benchmark: how close is each difference method to the pixels a fake really altered?

    .venv/bin/python benchmarks/masks.py

Pairs whose altered region is known exactly, re-encoded as lossy video on both sides so
that compression noise is there as in real pairs:

- ``sample``: the built-in sample's swaps (:func:`deepfake_lib.data.sample.swap_face`, astronaut
  and Grace Hopper each given the other's face), animated as the sample animates them (pan,
  zoom, brightness drift, sensor noise; 320 x 240 frames, the face 35-50% of the height).
- ``self_blend``: :func:`deepfake_lib.media.blend.self_blend` of the largest face in 8 consecutive
  frames of each shared real video (FF++ originals, DFDC ``lynaeydofd``, the clips), with the
  same random draw in every frame.
- ``photo_swap``: another person's face put on a web photo of ``faces/real_photos``
  (:func:`deepfake_lib.data.sample.swap_face`: landmark-aligned, colour-matched, blended through the
  feathered landmark hull), the photo animated with a slow pan and zoom.

The exact mask is every pixel the fake changed by more than ``EXACT_TOLERANCE`` levels (any
channel) before compression. Both clips are then encoded (H.264 yuv420p at CRF 23 and 28
through PyAV, MPEG-4 ``mp4v`` through OpenCV) and decoded, and evaluated as the prepare stage
crops: the face box found by MTCNN in the uncompressed real frame, grown by prepare's margin,
cropped from both decoded frames at prepare's crop size. Tables: IoU of each method's mask
with the exact mask (mean, median, share of crops >= 0.6) per method and parameter, the
default per source and codec, the mask's area on a real crop against the same crop
re-encoded (false positives, as an unswapped bystander in a fake video: it should be empty),
as a proxy only the masks of the FaceForensics++ c23 pairs (no exact mask exists: the share of
mask pixels inside the face box and the mask's area), and what dropping fake crops with a
near-empty mask would drop. About 2 CPU-minutes (one core, most of it building and encoding
the clips).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402

from deepfake_lib.data import sample  # noqa: E402
from deepfake_lib.media import blend, faces, masks, video
from deepfake_lib.stages.prepare import PrepareConfig  # noqa: E402

EXACT_TOLERANCE = 2                      # levels: smaller changes count as unchanged
CROP_SIZE = PrepareConfig.crop_size
MARGIN = PrepareConfig.margin
CLIP_FRAMES = 8
EVAL_FRAMES = (2, 5, 7)                  # frames of each clip that are cropped and scored
CODECS = ("h264 crf23", "h264 crf28", "mp4v")
SELF_BLEND_VIDEOS = ("ffpp/004.mp4", "ffpp/519.mp4", "ffpp/634.mp4", "dfdc/lynaeydofd.mp4",
                     "clips/news_anchor.mp4", "clips/short_hamilton_clip.mp4",
                     "clips/multi_person_1080p.mp4")
CLIPS_PER_VIDEO = 2
PHOTO_SWAPS = 12
FFPP_PAIRS = (("519.mp4", "519_515.mp4", "Deepfakes"), ("634.mp4", "634_660.mp4", "FaceSwap"),
              ("004.mp4", "004_982.mp4", "NeuralTextures"))
FFPP_FRAMES = 8
DROP_AREAS = (0.005, 0.01, 0.02, 0.05)


@dataclass
class Clip:
    """Uncompressed frames of a real clip and its fake, the face box in each real frame and
    the source they come from."""

    source: str
    name: str
    reals: list[np.ndarray]
    fakes: list[np.ndarray]
    boxes: list[faces.Box]


@dataclass
class Case:
    """One scored crop: decoded real and fake crops, the exact mask and the uncompressed real
    crop."""

    source: str
    codec: str
    real: np.ndarray
    fake: np.ndarray
    exact: np.ndarray
    clean_real: np.ndarray


def encode_decode(frames: list[np.ndarray], codec: str) -> list[np.ndarray]:
    """The frames (RGB, even sizes) after a round trip through a lossy video file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "clip.mp4")
        h, w = frames[0].shape[:2]
        if codec.startswith("h264"):
            with av.open(path, "w") as container:
                stream = container.add_stream("libx264", rate=Fraction(25))
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.options = {"crf": codec.split("crf")[1]}
                for frame in frames:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                container.mux(stream.encode())
        else:
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), 25.0, (w, h))
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
        decoded = [rgb for _, rgb in video.iter_frames(path)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"{codec}: {len(frames)} frames in, {len(decoded)} out")
    return decoded


def animate(box: faces.Box, size: tuple[int, int], face_px: tuple[float, float],
            rng: np.random.Generator) -> list[np.ndarray]:
    """``CLIP_FRAMES`` affine maps from photo to frame pixels (``size`` = width, height): a slow
    pan and a zoom that takes the photo's face ``box`` from ``face_px[0]`` to ``face_px[1]``
    pixels high, centred in the frame."""
    top, right, bottom, left = box
    cx, cy, height = (left + right) / 2, (top + bottom) / 2, bottom - top
    dx, dy = rng.uniform(-0.05, 0.05, size=2) * height
    mats = []
    for s in np.linspace(0.0, 1.0, CLIP_FRAMES):
        zoom = (face_px[0] + (face_px[1] - face_px[0]) * s) / height
        tx, ty = size[0] / 2 - zoom * (cx + dx * s), size[1] / 2 - zoom * (cy + dy * s)
        mats.append(np.array([[zoom, 0, tx], [0, zoom, ty]], np.float32))
    return mats


def photo_clip(source: str, name: str, photo: np.ndarray, swapped: np.ndarray,
               size: tuple[int, int], face_px: tuple[float, float],
               detector: faces.FaceDetector, rng: np.random.Generator) -> Clip | None:
    """The photo and its swapped version animated with the same motion, brightness drift and
    sensor noise (as the built-in sample renders its videos); None when a frame shows no face."""
    box = largest_face(faces.DlibDetector("hog", max_side=1024), photo)
    if box is None:
        return None
    gains = np.linspace(*rng.uniform(0.85, 1.15, size=2), CLIP_FRAMES)
    reals, fakes = [], []
    for mat, gain in zip(animate(box, size, face_px, rng), gains):
        grain = rng.normal(0, 3.0, size=(size[1], size[0], 1))
        for image, out in ((photo, reals), (swapped, fakes)):
            frame = cv2.warpAffine(image, mat, size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
            out.append(np.clip(frame.astype(np.float32) * gain + grain, 0, 255).astype(np.uint8))
    boxes = [largest_face(detector, real) for real in reals]
    return None if None in boxes else Clip(source, name, reals, fakes, boxes)


def largest_face(detector: faces.FaceDetector, rgb: np.ndarray) -> faces.Box | None:
    found = detector.detect(rgb)
    return max((d.box for d in found), key=faces.box_area) if found else None


def sample_clips(detector: faces.FaceDetector, rng: np.random.Generator) -> list[Clip]:
    """The built-in sample's two swaps, two clips each at the sample's frame size."""
    photos = sample.builtin_photos()
    clips = []
    for target, donor in (("astronaut", "grace_hopper"), ("grace_hopper", "astronaut")):
        swapped, _ = sample.swap_face(photos[target], photos[donor])
        for k in range(2):
            face_px = tuple(rng.uniform(0.35, 0.5, size=2) * 240)
            clips.append(photo_clip("sample", f"{target}_as_{donor}_{k}", photos[target], swapped,
                                    (320, 240), face_px, detector, rng))
    return [clip for clip in clips if clip]


def photo_clips(detector: faces.FaceDetector, rng: np.random.Generator) -> list[Clip]:
    """``PHOTO_SWAPS`` web photos of ``faces/real_photos``, each given another photo's face,
    the face kept at about its size in the photo."""
    folder = SHARED / "faces" / "real_photos"
    paths = sorted(p for p in folder.glob("*.jpg") if p.stem.isdigit())
    order = iter(rng.permutation(len(paths)))
    clips = []
    for i, j in zip(order, order):
        if len(clips) == PHOTO_SWAPS:
            break
        target, donor = (video.read_frames(str(paths[k]), [0])[0] for k in (i, j))
        try:
            swapped, _ = sample.swap_face(target, donor)
        except ValueError:  # no face that dlib's HOG finds in one of the two
            continue
        h, w = (s // 2 * 2 for s in target.shape[:2])
        face_px = tuple(rng.uniform(0.45, 0.55, size=2) * h)
        clip = photo_clip("photo_swap", f"{paths[i].stem}_as_{paths[j].stem}", target, swapped,
                          (w, h), face_px, detector, rng)
        if clip:
            clips.append(clip)
    return clips


def self_blend_clips(detector: faces.FaceDetector, rng: np.random.Generator) -> list[Clip]:
    """Self-blends of the largest face in ``CLIPS_PER_VIDEO`` runs of consecutive frames of
    each of ``SELF_BLEND_VIDEOS``; one random draw per clip, so the blend holds still."""
    clips = []
    for name in SELF_BLEND_VIDEOS:
        path = str(SHARED / "videos" / name)
        count = video.probe(path).frame_count
        for start in np.linspace(0, count - CLIP_FRAMES, CLIPS_PER_VIDEO + 2)[1:-1].astype(int):
            frames = video.read_frames(path, range(start, start + CLIP_FRAMES))
            seed = int(rng.integers(2**31))
            reals, fakes, boxes = [], [], []
            for index in sorted(frames):
                real = frames[index]
                box = largest_face(detector, real)
                if box is None:
                    break
                top, right, bottom, left = faces.expand_box(box, 0.5, *real.shape[:2])
                marks = faces.face_landmarks(real, [box])[0]
                points = np.array([p for f in marks.values() for p in f], np.float32) - (left, top)
                region, _ = blend.self_blend(real[top:bottom, left:right], points,
                                             np.random.default_rng(seed))
                fake = real.copy()
                fake[top:bottom, left:right] = region
                reals.append(real)
                fakes.append(fake)
                boxes.append(box)
            if len(reals) == CLIP_FRAMES:
                clips.append(Clip("self_blend", f"{Path(name).stem}@{start}", reals, fakes, boxes))
    return clips


def exact_mask(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """``uint8`` 0/1: pixels ``fake`` changed by more than ``EXACT_TOLERANCE`` on any channel."""
    return (cv2.absdiff(real, fake).max(axis=2) > EXACT_TOLERANCE).astype(np.uint8)


def crop(rgb: np.ndarray, box: faces.Box) -> tuple[np.ndarray, faces.Box]:
    return faces.crop_face_with_box(rgb, box, MARGIN, CROP_SIZE)


def cases_of(clip: Clip) -> list[Case]:
    """The scored crops of one clip under every codec."""
    exact = {i: crop(exact_mask(clip.reals[i], clip.fakes[i]).astype(np.float32),
                      clip.boxes[i])[0] >= 0.5 for i in EVAL_FRAMES}
    out = []
    for codec in CODECS:
        reals, fakes = encode_decode(clip.reals, codec), encode_decode(clip.fakes, codec)
        for i in EVAL_FRAMES:
            box = clip.boxes[i]
            out.append(Case(clip.source, codec, crop(reals[i], box)[0], crop(fakes[i], box)[0],
                            exact[i].astype(np.uint8), crop(clip.reals[i], box)[0]))
    return out


MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (original, fake) -> mask


def previous_default(original: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """The default before this benchmark existed, the baseline: the smoothed absolute
    difference over a fixed 20 levels, opened, closed and hole-filled at min(H, W) / 64."""
    size = max(3, (min(original.shape[:2]) // 64) | 1)
    diff = cv2.GaussianBlur(cv2.absdiff(original, fake).max(axis=2), (size, size), 0)
    return masks.clean((diff > 20).astype(np.uint8), size, size)


def previous_ssim(original: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """The dropped ``ssim`` method: 1 - SSIM of the grey images (7-px windows) over 0.25."""
    from skimage.metrics import structural_similarity  # noqa: PLC0415

    grey = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (original, fake)]
    _, sim = structural_similarity(*grey, win_size=7, full=True, data_range=255)
    size = max(3, (min(original.shape[:2]) // 64) | 1)
    return masks.clean(((1.0 - sim) > 0.25).astype(np.uint8), size, size)


def adaptive(**params: float) -> MaskFn:
    """The ``adaptive`` method with some parameters changed."""
    return lambda original, fake: masks.adaptive_mask(original, fake, **params)


DEFAULT = f"{masks.DEFAULT_METHOD} (default)"
CANDIDATES = {
    ("previous default", "fixed 20 levels, kernel side/64"): previous_default,
    ("previous ssim", "1 - SSIM > 0.25"): previous_ssim,
    ("seed", f"subtract > {masks.SEED_LEVEL}"): lambda o, f: masks.diff_mask(o, f, "seed"),
    (DEFAULT, f"{masks.NOISE_FACTOR} x noise, >= {masks.MIN_LEVEL:g}"): adaptive(),
    **{("adaptive", f"{k} x noise, >= {masks.MIN_LEVEL:g}"): adaptive(factor=k)
       for k in (2, 2.5, 3, 4) if k != masks.NOISE_FACTOR},
    **{("adaptive", f"{masks.NOISE_FACTOR} x noise, >= {m}"): adaptive(min_level=m)
       for m in (3, 8)},
    **{("fixed level", f"{m} levels, adaptive's clean-up"): adaptive(factor=0, min_level=m)
       for m in (6, 10, 20)},
    ("adaptive", "no smoothing"): adaptive(smooth=0),
    ("adaptive", "smoothing x2"): adaptive(smooth=2 * masks.SMOOTH),
    ("adaptive", "no clean-up"): adaptive(opening=0, closing=0),
    ("adaptive", "opening side/64, closing side/20"): adaptive(opening=1 / 64, closing=1 / 20),
    ("adaptive", "opening side/20, closing side/6"): adaptive(opening=1 / 20, closing=1 / 6),
}


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 1.0


def score(cases: list[Case], make: MaskFn) -> tuple[list[float], list[float], list[float]]:
    """IoU with the exact mask and mask area on each fake crop, and the share of a real crop
    flagged against its uncompressed self."""
    ious, areas, false = [], [], []
    for case in cases:
        mask = make(case.real, case.fake)
        ious.append(iou(mask, case.exact))
        areas.append(float(mask.mean()))
        false.append(float(make(case.clean_real, case.real).mean()))
    return ious, areas, false


def method_table(cases: list[Case]) -> dict:
    sources = sorted({c.source for c in cases})
    results, rows = {}, []
    for (method, param), make in CANDIDATES.items():
        results[method, param] = ious, areas, false = score(cases, make)
        ious = np.array(ious)
        by_source = [np.mean([v for v, c in zip(ious, cases) if c.source == s]) for s in sources]
        rows.append([method, param, ious.mean(), np.median(ious), float((ious >= 0.6).mean()),
                     *by_source, np.mean(false), max(false)])
    base = rows[0][2]
    for row in rows:
        row.insert(3, f"{row[2] / base:.2f}")
    print_table(f"IoU with the exact mask, {len(cases)} crops ({CROP_SIZE} px, margin {MARGIN}) "
                f"of re-encoded pairs; ratio: mean IoU / the previous default's",
                ["method", "parameter", "mean IoU", "ratio", "median IoU", "share >= 0.6",
                 *[f"mean IoU {s}" for s in sources], "real/recompressed: mean share flagged",
                 "max share flagged"], rows)
    return results


def default_tables(cases: list[Case], results: dict) -> None:
    key = next(k for k in results if k[0] == DEFAULT)
    ious, areas, false = (np.array(v) for v in results[key])
    rows = []
    for source in sorted({c.source for c in cases}):
        for codec in CODECS:
            pick = np.array([c.source == source and c.codec == codec for c in cases])
            iou_, area, flagged = ious[pick], areas[pick], false[pick]
            rows.append([source, codec, int(pick.sum()), iou_.mean(), np.median(iou_), iou_.min(),
                         area.min(), flagged.mean(), flagged.max()])
    print_table(f"The default ({masks.DEFAULT_METHOD}, {key[1]}) per source and codec",
                ["source", "codec", "crops", "mean IoU", "median IoU", "min IoU",
                 "min mask area (fakes)", "real/recompressed: mean share", "max share"], rows)


def drop_table(cases: list[Case], results: dict, ffpp_areas: list[float]) -> None:
    """What a rule "drop a fake crop whose mask covers less than X of it" would do."""
    key = next(k for k in results if k[0] == DEFAULT)
    _, areas, false = (np.array(v) for v in results[key])
    exact = np.array([c.exact.mean() for c in cases])
    quantiles = [0, 1, 5, 50, 95, 99, 100]
    print_table("Mask area as a share of the crop (percentiles)",
                ["masks", *[f"p{q}" for q in quantiles]],
                [["exact, fakes", *np.percentile(exact, quantiles)],
                 ["default, fakes", *np.percentile(areas, quantiles)],
                 ["default, FF++ fakes (all three kinds)", *np.percentile(ffpp_areas, quantiles)],
                 ["default, real/recompressed (bystanders)", *np.percentile(false, quantiles)]])
    rows = [[f"{x:.1%}", float((areas < x).mean()), float((np.array(ffpp_areas) < x).mean()),
             float((false >= x).mean())] for x in DROP_AREAS]
    print_table("Rule: drop a fake crop when the default mask covers less than X of it",
                ["X", "exact fakes dropped", "FF++ fakes dropped", "bystanders kept"], rows)


def ffpp_proxy(detector: faces.FaceDetector) -> list[float]:
    """FaceForensics++ c23 pairs, where no exact mask exists: where the mask lies, how big.
    Returns the default's mask areas."""
    folder = SHARED / "videos" / "ffpp"
    methods = {k: v for k, v in CANDIDATES.items()
               if k[0] in ("previous default", "previous ssim", "seed", DEFAULT)}
    rows, default_areas = [], []
    for original, fake, kind in FFPP_PAIRS:
        count = min(video.probe(str(folder / name)).frame_count for name in (original, fake))
        indices = np.linspace(0, count - 1, FFPP_FRAMES).astype(int)
        reals = video.read_frames(str(folder / original), indices)
        fakes = video.read_frames(str(folder / fake), indices)
        crops = []
        for i in indices:
            box = largest_face(detector, reals[i])
            real, inner = crop(reals[i], box)
            crops.append((real, crop(fakes[i], box)[0], inner))
        for (method, param), make in methods.items():
            inside = total = 0.0
            areas = []
            for real, fake, (top, right, bottom, left) in crops:
                mask = make(real, fake)
                inside += mask[top:bottom, left:right].sum()
                total += mask.sum()
                areas.append(mask.mean())
            rows.append([kind, method, param, inside / total if total else float("nan"),
                         np.mean(areas), min(areas)])
            if method == DEFAULT:
                default_areas += areas
    print_table(f"PROXY ONLY (no exact mask): FF++ c23 pairs, {FFPP_FRAMES} crops each; share of "
                "mask pixels inside the face box, and mask area as a share of the crop",
                ["pair", "method", "parameter", "share inside face box", "mean area", "min area"],
                rows)
    return default_areas


def main() -> None:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    detector = faces.make_face_detector("mtcnn")
    clips = (sample_clips(detector, rng) + photo_clips(detector, rng)
             + self_blend_clips(detector, rng))
    cases = [case for clip in clips for case in cases_of(clip)]
    built = time.perf_counter() - start
    counts = ", ".join(f"{s}: {sum(c.source == s for c in clips)}"
                       for s in sorted({c.source for c in clips}))
    print(f"{len(clips)} clips ({counts}), {len(cases)} crops, built and re-encoded in "
          f"{built:.0f} s")
    results = method_table(cases)
    default_tables(cases, results)
    drop_table(cases, results, ffpp_proxy(detector))
    print(f"\ntotal {time.perf_counter() - start:.0f} s wall, {time.process_time():.0f} s CPU")


if __name__ == "__main__":
    main()
