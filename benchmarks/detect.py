"""Detector benchmark: a trained model side by side with MesoNet-4 and MesoInception-4 on the
same labelled face crops: AUC, log loss and seconds per crop, measured in one run.

    .venv/bin/python benchmarks/detect.py --out DIR [--epochs 6] [--image-size 160]
    .venv/bin/python benchmarks/detect.py --model DIR   # an already trained model

With ``--out``, the reference detector is first trained from scratch (:func:`train_reference`):
real faces of ``../shared/data/faces/real_photos`` and ``videos/clips`` with pseudo-fakes
made every epoch, the best epoch and the temperature chosen on ``dfdc_dev``. ``DIR/model``
loads with ``load_model``. The dfdc_dev figures are therefore of the validation set the
model was selected and calibrated on; the shared videos were never seen.

Crop sets (labels: 1 = fake):
- ``dfdc_dev``: the 67 DFDC face crops of ``../shared/data/crops/dfdc_dev`` as they are
  (224 px, 34 real, 33 fake; never trained on).
- ``shared_videos``: faces of the labelled shared videos (FaceForensics++ originals and fakes,
  the two DFDC videos): the main person's face (MTCNN once a second, linked into tracks) at 8
  detections spread over the video, each cut at the box found in that frame (a fake's faces
  in the fake's own frames), with the model's own margin and size (``crop_margin`` and
  ``image_size`` in its ``config.json``; else 0.3 and 256). Video-level scores average each
  video's crops.

MesoNet (Keras weights in ``--mesonet``, ported in ``mesonet.py``) gets the same crops resized
to 256 px. Without ``--model`` only the MesoNet rows are printed. Meso4_DF is the baseline of
the time ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402
from mesonet import load_meso4, load_mesoinception4, mesonet_fake_probability  # noqa: E402

from deepfake_lib import faces, storage, tracks, video  # noqa: E402
from deepfake_lib.metrics import binary_scores  # noqa: E402

Predict = Callable[[list[np.ndarray]], np.ndarray]

DEFAULT_MARGIN, DEFAULT_SIZE = 0.3, 256
FRAMES_PER_VIDEO = 8
LABELLED_VIDEO_FOLDERS = ("videos/ffpp", "videos/dfdc")
MESONETS = ("Meso4_DF", "Meso4_F2F", "MesoInception_DF", "MesoInception_F2F")
BASELINE = "Meso4_DF"


@dataclass
class CropSet:
    """Labelled face crops: RGB ``uint8`` arrays, labels (1 = fake), and per crop the id of
    the video or file it came from."""

    crops: list[np.ndarray]
    labels: np.ndarray
    groups: list[str]


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def folder_crops(folder: Path) -> CropSet:
    """The crops of ``folder/real`` and ``folder/fake`` as they are. Files are named
    ``<video>_<k>.jpg`` (real) or ``<fake video>_<original>_<k>.jpg``: the group is the
    first part."""
    crops, labels, groups = [], [], []
    for label, sub in ((0, "real"), (1, "fake")):
        for path in sorted((folder / sub).glob("*.jpg")):
            crops.append(read_rgb(path))
            labels.append(label)
            groups.append(path.stem.split("_")[0])
    return CropSet(crops, np.array(labels, dtype=int), groups)


def video_crops(path: Path, detector: faces.FaceDetector, margin: float, size: int,
                frames: int = FRAMES_PER_VIDEO, detect_every_s: float = 1.0) -> list[np.ndarray]:
    """Crops of the video's main person (the face track with the most detections) at up to
    ``frames`` of that track's detection frames, spread evenly over it, each cut at the box
    detected in that very frame. The track keeps bystanders and faces on screens out (an
    inset on a FaceForensics++ fake is larger than the anchor's face in a wide shot)."""
    decoded = video.read_frames(str(path),
                                tracks.detect_frames(video.probe(str(path)), detect_every_s))
    found = tracks.track_faces(str(path), detector, detect_every_s, frames=decoded).tracks
    if not found:
        return []
    main = max(found, key=lambda t: len(t.frames))
    picks = sorted({int(round(i)) for i in np.linspace(0, len(main.frames) - 1, frames)})
    return [faces.crop_face_with_box(decoded[main.frames[i]], main.boxes[i], margin, size)[0]
            for i in picks]


def labelled_videos(shared: Path) -> list[tuple[Path, int]]:
    """``(path, label)`` of every video listed in the ``metadata.json`` of the labelled
    shared video folders and present on disk (1 = fake)."""
    out = []
    for folder in LABELLED_VIDEO_FOLDERS:
        metadata = json.loads((shared / folder / "metadata.json").read_text())
        for name, entry in sorted(metadata.items()):
            if (shared / folder / name).is_file():
                out.append((shared / folder / name, int(entry["label"] == "FAKE")))
    return out


def shared_video_crops(shared: Path, margin: float, size: int) -> CropSet:
    """Face crops of the labelled shared videos, grouped by ``folder/video name``."""
    detector = faces.get_face_detector("mtcnn")
    crops, labels, groups = [], [], []
    for path, label in labelled_videos(shared):
        found = video_crops(path, detector, margin, size)
        crops += found
        labels += [label] * len(found)
        groups += [f"{path.parent.name}/{path.name}"] * len(found)
    return CropSet(crops, np.array(labels, dtype=int), groups)


def crop_sets(shared: Path, margin: float, size: int) -> dict[str, CropSet]:
    """The benchmark's labelled crop sets (see the module docstring); ``margin`` and ``size``
    apply to the crops cut from the shared videos."""
    return {"dfdc_dev": folder_crops(shared / "crops" / "dfdc_dev"),
            "shared_videos": shared_video_crops(shared, margin, size)}


def group_means(crops: CropSet, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (in first-seen order): its label and the mean probability of its crops."""
    names = list(dict.fromkeys(crops.groups))
    index = np.array([names.index(g) for g in crops.groups])
    labels = np.array([crops.labels[index == i][0] for i in range(len(names))])
    means = np.array([probs[index == i].mean() for i in range(len(names))])
    return labels, means


def evaluate(predict: Predict, crops: CropSet, repeats: int = 2) -> dict[str, float]:
    """AUC and log loss (clipped as the leaderboard clips) of ``predict``'s fake
    probabilities on ``crops``, seconds per crop (the fastest of ``repeats`` passes after
    one warm-up crop: the machine is shared), and the same scores per group
    (``video_auc``, ``video_logloss``: the mean of a group's crops)."""
    predict(crops.crops[:1])
    seconds = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        probs = np.asarray(predict(crops.crops), dtype=float)
        seconds = min(seconds, time.perf_counter() - start)
    scores = binary_scores(crops.labels, probs)
    per_video = binary_scores(*group_means(crops, probs))
    return {"auc": scores["auc"], "logloss": scores["logloss"],
            "s_per_crop": seconds / len(crops.crops), "seconds": seconds,
            "video_auc": per_video["auc"], "video_logloss": per_video["logloss"]}


def model_crop_settings(model_dir: str) -> tuple[float, int]:
    """``(crop margin, input size)`` the model was trained with, from its ``config.json``
    (defaults 0.3 and 256 where it does not say)."""
    config = json.loads(storage.read_bytes(storage.join(model_dir, "config.json")))
    return (float(config.get("crop_margin", DEFAULT_MARGIN)),
            int(config.get("image_size", DEFAULT_SIZE)))


def train_reference(out: Path, shared: Path, epochs: int, image_size: int) -> str:
    """Train the reference detector from scratch into ``out`` and return its model directory:
    prepare crops the real faces of the shared photos and real clips (all in the train
    split), and training makes their pseudo-fakes every epoch; ``dfdc_dev`` only validates
    (best epoch, temperature). The labelled shared videos are never trained on."""
    from deepfake_lib.model import ModelConfig  # noqa: PLC0415
    from deepfake_lib.prepare import PrepareConfig, run_prepare  # noqa: PLC0415
    from deepfake_lib.runtime import cluster_cpus, init_ray  # noqa: PLC0415
    from deepfake_lib.training import TrainConfig, run_train  # noqa: PLC0415

    init_ray()
    data = (str(shared / "faces" / "real_photos"), str(shared / "videos" / "clips"))
    print(run_prepare(PrepareConfig(data=data, out=str(out), val_fraction=0.0)).text(),
          flush=True)
    summary = run_train(TrainConfig(
        out=str(out), model=ModelConfig(image_size=image_size), workers=1,
        cpus_per_worker=cluster_cpus(), epochs=epochs, batch_size=16, lr=5e-4,
        val_data=(str(shared / "crops" / "dfdc_dev"),)))
    print(summary.text(), flush=True)
    return summary.model_dir


def mesonet_predictors(mesonet_dir: Path) -> dict[str, Predict]:
    """A fake-probability function per published MesoNet weights file."""
    out = {}
    for name in MESONETS:
        loader = load_meso4 if name.startswith("Meso4") else load_mesoinception4
        model = loader(str(mesonet_dir / f"{name}.h5"))
        out[name] = lambda crops, model=model: mesonet_fake_probability(model, crops)
    return out


def model_predictor(model_dir: str) -> Predict:
    from deepfake_lib.model import load_model  # noqa: PLC0415

    return load_model(model_dir).predict


def table(results: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], list[list]]:
    """Headers and rows of the table of ``results`` (model -> crop set -> :func:`evaluate`'s
    scores): per crop set AUC, log loss, s/crop (and the video-level scores of
    ``shared_videos``), then each model's total time relative to the baseline's."""
    baseline_s = sum(r["seconds"] for r in results[BASELINE].values())
    headers, rows = ["model"], []
    for s in results[BASELINE]:
        headers += [f"{s} AUC", f"{s} log loss", f"{s} s/crop"]
        if s == "shared_videos":
            headers += [f"{s} video AUC", f"{s} video log loss"]
    headers.append(f"time / {BASELINE}")
    for name, by_set in results.items():
        row = [name]
        for s, r in by_set.items():
            row += [r["auc"], r["logloss"], r["s_per_crop"]]
            if s == "shared_videos":
                row += [r["video_auc"], r["video_logloss"]]
        rows.append(row + [sum(r["seconds"] for r in by_set.values()) / baseline_s])
    return headers, rows


def run_evaluation(model_dir: str | None, mesonet_dir: Path, shared: Path) -> None:
    """Score the model in ``model_dir`` (when given) and the MesoNets on the crop sets and
    print one table."""
    margin, size = model_crop_settings(model_dir) if model_dir else (DEFAULT_MARGIN,
                                                                     DEFAULT_SIZE)
    start = time.perf_counter()
    sets = crop_sets(shared, margin, size)
    counts = ", ".join(f"{s} {len(c.crops)} crops of {len(set(c.groups))} groups "
                       f"({int(c.labels.sum())} fake)" for s, c in sets.items())
    print(f"crops: {counts}; video crops at margin {margin}, {size} px; made in "
          f"{time.perf_counter() - start:.1f} s")
    predictors = {"trained model": model_predictor(model_dir)} if model_dir else {}
    predictors.update(mesonet_predictors(mesonet_dir))
    results = {name: {s: evaluate(predict, crops) for s, crops in sets.items()}
               for name, predict in predictors.items()}
    title = "Detectors on labelled face crops (log loss clipped at 1e-15)"
    print_table(title + (f"; trained model: {model_dir}" if model_dir else ""), *table(results))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path,
                   help="train the reference detector into this run directory first")
    p.add_argument("--epochs", type=int, default=6, help="with --out")
    p.add_argument("--image-size", type=int, default=160, help="with --out: network input, px")
    p.add_argument("--model", help="a trained model directory (as load_model reads)")
    p.add_argument("--mesonet", type=Path, default=SHARED.parent / "models" / "mesonet",
                   help="folder of the MesoNet .h5 weights (default: %(default)s)")
    a = p.parse_args()
    start = time.perf_counter()
    model = train_reference(a.out, SHARED, a.epochs, a.image_size) if a.out else a.model
    trained = time.perf_counter()
    run_evaluation(model, a.mesonet, SHARED)
    print(f"\ntraining took {trained - start:.0f} s, "
          f"evaluation {time.perf_counter() - trained:.0f} s")


if __name__ == "__main__":
    main()
