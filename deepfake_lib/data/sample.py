"""The built-in sample: a small DFDC-format data set made on the spot, with no download.

Real videos are face photos set in motion (pan, zoom, brightness drift, sensor noise). Each
fake is its real video with the face replaced by another identity's face, aligned on the 68
facial landmarks and blended through a soft mask, then animated with the very same motion, so
the pair differs only in the face region, as DFDC fakes differ from their originals.

By default the photos are the two portraits that ship inside installed packages
(scikit-image's ``astronaut``, matplotlib's ``grace_hopper.jpg``); any folder of photos, one
identity per photo, can be used instead. Videos are H.264 (PyAV's libx264).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from deepfake_lib.data.dataset import METADATA_NAME
from deepfake_lib.media import faces
from deepfake_lib.media.video import IMAGE_EXTENSIONS

PART_NAME = "sample_part_0"
SHARED_DATA_ENV = "DEEPFAKE_SHARED_DATA"


def shared_data_dir() -> Path:
    """The shared real test data (DFDC, FaceForensics++ and face photos) that tests and
    benchmarks read in place: ``$DEEPFAKE_SHARED_DATA``, by default ``../shared/data`` beside
    the repository."""
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(os.environ.get(SHARED_DATA_ENV, default))


@dataclass(frozen=True)
class SampleConfig:
    videos_per_identity: int = 4
    frames: int = 48
    fps: float = 24.0
    width: int = 320
    height: int = 240
    seed: int = 0


def builtin_photos() -> dict[str, np.ndarray]:
    """The face photos that ship inside installed packages, by identity name (RGB)."""
    import matplotlib.cbook  # noqa: PLC0415
    import skimage.data  # noqa: PLC0415

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return {"astronaut": skimage.data.astronaut(),
            "grace_hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)}


def load_photos(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every jpg/png in ``folder`` as RGB, keyed by file stem (one identity per photo)."""
    photos = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                photos[path.stem] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if len(photos) < 2:
        raise ValueError(f"{folder}: need at least two readable photos (identities), "
                         f"found {len(photos)}")
    return photos


def _main_face(rgb: np.ndarray) -> tuple[faces.Box, np.ndarray]:
    """The largest face's box and its 68 landmarks as an ``(68, 2)`` float array of x, y."""
    found = faces.DlibDetector("hog", max_side=1024).detect(rgb)
    if not found:
        raise ValueError("no face found in a sample photo")
    box = found[0].box
    marks = faces.face_landmarks(rgb, [box])[0]
    points = np.array([p for feature in marks.values() for p in feature], np.float32)
    return box, points


def swap_face(target: np.ndarray, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put ``donor``'s face onto ``target``'s (both RGB photos).

    The donor is warped by the similarity transform that maps its landmarks onto the
    target's, its colours matched to the target's skin (mean and spread per LAB channel),
    and blended through the landmarks' convex hull, eroded and feathered. Returns
    ``(swapped image, blend mask as float32 in [0, 1])``.
    """
    _, t_pts = _main_face(target)
    _, d_pts = _main_face(donor)
    matrix, _ = cv2.estimateAffinePartial2D(d_pts, t_pts, method=cv2.LMEDS)
    h, w = target.shape[:2]
    warped = cv2.warpAffine(donor, matrix, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    hull = cv2.convexHull(t_pts.astype(np.int32))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    size = int(np.sqrt(cv2.contourArea(hull)))
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=max(1, size // 30))
    blur = max(3, (size // 8) | 1)
    soft = cv2.GaussianBlur(mask, (blur, blur), 0).astype(np.float32) / 255.0

    inside = mask > 0
    t_lab = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    w_lab = cv2.cvtColor(warped, cv2.COLOR_RGB2LAB).astype(np.float32)
    for c in range(3):
        t_vals, w_vals = t_lab[..., c][inside], w_lab[..., c][inside]
        w_lab[..., c] = (w_lab[..., c] - w_vals.mean()) * (t_vals.std() / (w_vals.std() + 1e-6)) \
            + t_vals.mean()
    warped = cv2.cvtColor(np.clip(w_lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    out = target * (1 - soft[..., None]) + warped * soft[..., None]
    return np.clip(out, 0, 255).astype(np.uint8), soft


def _motion(config: SampleConfig, photo_shape: tuple[int, ...], face_box: faces.Box,
            rng: np.random.Generator) -> list[np.ndarray]:
    """Per-frame 2x3 affine matrices mapping photo pixels to video pixels: a smooth pan and
    zoom around the face, which stays in view."""
    n = config.frames
    t = np.linspace(0.0, 1.0, n)
    top, right, bottom, left = face_box
    face_cy, face_cx = (top + bottom) / 2, (left + right) / 2
    face_h = bottom - top
    # the face fills about 35-50% of the frame height, drifting smoothly
    zoom0, zoom1 = rng.uniform(0.35, 0.5, size=2) * config.height / face_h
    dx0, dx1, dy0, dy1 = rng.uniform(-0.12, 0.12, size=4) * face_h
    mats = []
    for s in t:
        zoom = zoom0 + (zoom1 - zoom0) * s
        cx, cy = face_cx + dx0 + (dx1 - dx0) * s, face_cy + dy0 + (dy1 - dy0) * s
        mats.append(np.array([[zoom, 0, config.width / 2 - zoom * cx],
                              [0, zoom, config.height / 2 - zoom * cy]], np.float32))
    return mats


def _render(photo: np.ndarray, mats: list[np.ndarray], gains: np.ndarray,
            noise: np.ndarray, config: SampleConfig) -> list[np.ndarray]:
    frames = []
    for mat, gain, grain in zip(mats, gains, noise):
        frame = cv2.warpAffine(photo, mat, (config.width, config.height),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame = frame.astype(np.float32) * gain + grain
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: float) -> None:
    """Write RGB frames as an H.264 MP4 (yuv420p, CRF 18)."""
    from fractions import Fraction  # noqa: PLC0415

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_sample(out_dir: str | os.PathLike, photos: dict[str, np.ndarray] | None = None,
                 config: SampleConfig = SampleConfig()) -> Path:
    """Write the sample into ``out_dir/sample_part_0`` (``metadata.json`` and the videos).

    Each identity (a photo with a face; photos without are skipped) gets
    ``videos_per_identity`` real videos and as many fakes, each fake made from one real with
    the next identity's face. Returns the part folder. Deterministic for a given
    ``config.seed``; existing files are overwritten.
    """
    photos = builtin_photos() if photos is None else photos
    boxes = {}
    for name in sorted(photos):
        try:
            boxes[name] = _main_face(photos[name])[0]
        except ValueError:
            continue  # a photo without a face that dlib's HOG can find is not an identity
    if len(boxes) < 2:
        raise ValueError(f"the sample needs at least two photos with a findable face, "
                         f"got {len(boxes)} of {len(photos)}")
    rng = np.random.default_rng(config.seed)
    part = Path(out_dir) / PART_NAME
    part.mkdir(parents=True, exist_ok=True)
    names = sorted(boxes)
    metadata: dict[str, dict] = {}
    for i, name in enumerate(names):
        donor = names[(i + 1) % len(names)]
        swapped, _ = swap_face(photos[name], photos[donor])
        for k in range(config.videos_per_identity):
            mats = _motion(config, photos[name].shape, boxes[name], rng)
            drift = rng.uniform(0.8, 1.2, size=2)
            gains = np.linspace(drift[0], drift[1], config.frames)
            noise = rng.normal(0, 3.0, size=(config.frames, config.height, config.width, 1))
            real_id, fake_id = f"{name}_{k}.mp4", f"{name}_{k}_as_{donor}.mp4"
            write_video(part / real_id, _render(photos[name], mats, gains, noise, config),
                        config.fps)
            write_video(part / fake_id, _render(swapped, mats, gains, noise, config), config.fps)
            metadata[real_id] = {"label": "REAL", "split": "train", "original": None}
            metadata[fake_id] = {"label": "FAKE", "split": "train", "original": real_id}
    (part / METADATA_NAME).write_text(json.dumps(metadata, indent=1))
    return part
