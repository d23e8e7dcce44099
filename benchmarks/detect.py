"""Detector benchmark: the shipped reference detector, the self-blend-only recipe and MesoNet
side by side on the same labelled face crops: AUC, log loss, expected calibration error (ECE)
and seconds per crop, measured in one run.

    .venv/bin/python benchmarks/detect.py                       # the shipped detector
    .venv/bin/python benchmarks/detect.py --self-blend DIR      # and a self-blend-only model
    .venv/bin/python benchmarks/detect.py --train-self-blend RUN [--epochs 6]

``--train-self-blend`` first trains the self-blend-only recipe from scratch
(:func:`train_self_blend`): real faces of ``../shared/data/faces/real_photos`` and
``videos/clips`` with pseudo-fakes made every epoch, the best epoch and the temperature chosen
on ``dfdc_dev``. Its dfdc_dev figures are therefore of the set it was selected on.

Crop sets (labels: 1 = fake):
- ``dfdc_faces_val``: the crops of ``../shared/data/crops/dfdc_faces`` whose videos are in
  the shipped detector's ``validation_videos.txt``: the people it was never trained on (its
  best epoch and temperature were chosen on them).
- ``dfdc_dev``: the 67 DFDC face crops of ``../shared/data/crops/dfdc_dev`` as they are
  (224 px, 34 real, 33 fake; never trained on).
- ``shared_videos``: faces of the labelled shared videos (FaceForensics++ originals and fakes,
  the two DFDC videos): the main person's face (MTCNN once a second, linked into tracks) at 8
  detections spread over the video, each cut at the box found in that frame with the model's
  own margin and size (``crop_margin`` and ``image_size`` in its ``config.json``).
  Video-level scores average each video's crops. The reference is also shown cut at margin
  0.15 (the pipeline's default), to show what a framing other than its training's costs.

MesoNet (Keras weights in ``--mesonet``, ported in ``mesonet.py``) gets the same crops as the
reference, resized to 256 px. Meso4_DF is the baseline of the time ratio.
"""

from __future__ import annotations

import argparse
import csv
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

from deepfake_lib.core import storage  # noqa: E402
from deepfake_lib.media import faces, tracks, video
from deepfake_lib.models.detector import reference_dir, resolve_model  # noqa: E402
from deepfake_lib.models.metrics import binary_scores, expected_calibration_error  # noqa: E402

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


def group_means(crops: CropSet, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (in first-seen order): its label and the mean probability of its crops."""
    names = list(dict.fromkeys(crops.groups))
    index = np.array([names.index(g) for g in crops.groups])
    labels = np.array([crops.labels[index == i][0] for i in range(len(names))])
    means = np.array([probs[index == i].mean() for i in range(len(names))])
    return labels, means


def evaluate(predict: Predict, crops: CropSet, repeats: int | None = None) -> dict[str, float]:
    """AUC and log loss (clipped as the leaderboard clips) of ``predict``'s fake
    probabilities on ``crops``, seconds per crop (the fastest of ``repeats`` passes, by default
    two up to 1,000 crops and one above, after one warm-up crop: the machine is shared), and
    the same scores per group
    (``video_auc``, ``video_logloss``: the mean of a group's crops)."""
    predict(crops.crops[:1])
    repeats = repeats or (2 if len(crops.crops) <= 1000 else 1)
    seconds = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        probs = np.asarray(predict(crops.crops), dtype=float)
        seconds = min(seconds, time.perf_counter() - start)
    scores = binary_scores(crops.labels, probs)
    per_video = binary_scores(*group_means(crops, probs))
    return {"auc": scores["auc"], "logloss": scores["logloss"],
            "ece": expected_calibration_error(crops.labels, probs),
            "s_per_crop": seconds / len(crops.crops), "seconds": seconds,
            "video_auc": per_video["auc"], "video_logloss": per_video["logloss"]}


def model_crop_settings(model_dir: str) -> tuple[float, int]:
    """``(crop margin, input size)`` the model was trained with, from its ``config.json``."""
    config = json.loads(storage.read_bytes(storage.join(resolve_model(model_dir),
                                                        "config.json")))
    return (float(config.get("crop_margin", DEFAULT_MARGIN)),
            int(config.get("image_size", DEFAULT_SIZE)))


def dfdc_faces_validation(shared: Path) -> CropSet:
    """The dfdc_faces crops of the videos the shipped detector held out (each its own group:
    one crop per video)."""
    held_out = set(Path(reference_dir(), "validation_videos.txt").read_text().split())
    folder = shared / "crops" / "dfdc_faces"
    crops, labels, groups = [], [], []
    with open(folder / "metadata.csv") as f:
        for row in csv.DictReader(f):
            video = Path(row["video"]).stem
            if video in held_out:
                crops.append(read_rgb(folder / row["file"]))
                labels.append(int(row["label"] == "FAKE"))
                groups.append(video)
    return CropSet(crops, np.array(labels, dtype=int), groups)


def train_self_blend(out: Path, shared: Path, epochs: int, image_size: int) -> str:
    """Train the self-blend-only recipe from scratch into ``out`` and return its model
    directory:
    prepare crops the real faces of the shared photos and real clips (all in the train
    split), and training makes their pseudo-fakes every epoch; ``dfdc_dev`` only validates
    (best epoch, temperature). The labelled shared videos are never trained on."""
    from deepfake_lib.execution.connect import init_ray  # noqa: PLC0415
    from deepfake_lib.execution.resources import Resources, cluster_cpus  # noqa: PLC0415
    from deepfake_lib.models.detector import ModelConfig  # noqa: PLC0415
    from deepfake_lib.stages.prepare import PrepareConfig, run_prepare  # noqa: PLC0415
    from deepfake_lib.stages.train import TrainConfig, run_train  # noqa: PLC0415

    init_ray()
    data = (str(shared / "faces" / "real_photos"), str(shared / "videos" / "clips"))
    print(run_prepare(PrepareConfig(data=data, out=str(out), val_fraction=0.0)).text(),
          flush=True)
    summary = run_train(TrainConfig(
        out=str(out), model=ModelConfig(image_size=image_size), workers=Resources(
            "worker", count=1, cpus=cluster_cpus()), epochs=epochs, batch_size=16, lr=5e-4,
        val_data=(str(shared / "crops" / "dfdc_dev"),)))
    print(summary.text(), flush=True)
    return summary.model_dir


def model_predictor(model_dir: str) -> Predict:
    from deepfake_lib.models.detector import load_model  # noqa: PLC0415

    return load_model(model_dir).predict


def mesonet_predictors(mesonet_dir: Path) -> dict[str, Predict]:
    """A fake-probability function per published MesoNet weights file."""
    out = {}
    for name in MESONETS:
        loader = load_meso4 if name.startswith("Meso4") else load_mesoinception4
        model = loader(str(mesonet_dir / f"{name}.h5"))
        out[name] = lambda crops, model=model: mesonet_fake_probability(model, crops)
    return out


def table(results: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], list[list]]:
    """Headers and rows of the table of ``results`` (model -> crop set -> :func:`evaluate`'s
    scores): per crop set AUC, log loss, ECE, s/crop (and the video-level scores of
    ``shared_videos``), then each model's total time relative to the baseline's."""
    sets = list(dict.fromkeys(s for by_set in results.values() for s in by_set))
    baseline_s = sum(r["seconds"] for r in results[BASELINE].values())
    headers, rows = ["model"], []
    for s in sets:
        headers += [f"{s} AUC", f"{s} log loss", f"{s} ECE", f"{s} s/crop"]
        if s == "shared_videos":
            headers += [f"{s} video AUC", f"{s} video log loss"]
    headers.append(f"time / {BASELINE}")
    for name, by_set in results.items():
        row = [name]
        for s in sets:
            r = by_set.get(s)
            row += [r["auc"], r["logloss"], r["ece"], r["s_per_crop"]] if r else ["-"] * 4
            if s == "shared_videos":
                row += [r["video_auc"], r["video_logloss"]] if r else ["-"] * 2
        whole = set(by_set) == set(sets)  # a row of one set has no time to compare
        rows.append(row + [sum(r["seconds"] for r in by_set.values()) / baseline_s
                           if whole else "-"])
    return headers, rows


def run_evaluation(models: dict[str, str], mesonet_dir: Path, shared: Path) -> None:
    """Score the models (name -> model folder) and the MesoNets on the crop sets and print
    one table. Each model sees the shared videos' faces cut at its own margin and size."""
    start = time.perf_counter()
    fixed = {"dfdc_faces_val": dfdc_faces_validation(shared),
             "dfdc_dev": folder_crops(shared / "crops" / "dfdc_dev")}
    settings = {name: model_crop_settings(d) for name, d in models.items()}
    margin, size = settings["reference"]
    settings["reference, margin 0.15"] = (0.15, size)
    video_crops_at = {m: shared_video_crops(shared, *m) for m in set(settings.values())}
    for name, crops in [*fixed.items(), ("shared_videos", video_crops_at[(margin, size)])]:
        print(f"{name}: {len(crops.crops)} crops of {len(set(crops.groups))} videos "
              f"({int(crops.labels.sum())} fake)")
    print(f"crops made in {time.perf_counter() - start:.0f} s")
    predictors = {name: model_predictor(d) for name, d in models.items()}
    results = {}
    for name, predict in predictors.items():
        results[name] = {**{s: evaluate(predict, c) for s, c in fixed.items()},
                         "shared_videos": evaluate(predict, video_crops_at[settings[name]])}
        if name == "reference":
            results["reference, margin 0.15"] = {"shared_videos": evaluate(
                predict, video_crops_at[settings["reference, margin 0.15"]])}
    for name, predict in mesonet_predictors(mesonet_dir).items():
        results[name] = {**{s: evaluate(predict, c) for s, c in fixed.items()},
                         "shared_videos": evaluate(predict, video_crops_at[(margin, size)])}
    print_table("Detectors on labelled face crops (log loss clipped at 1e-15)", *table(results))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", default="reference",
                   help="the reference detector's folder (default: the shipped one)")
    p.add_argument("--self-blend", help="a self-blend-only model folder to compare")
    p.add_argument("--train-self-blend", type=Path,
                   help="train the self-blend-only recipe into this run directory first")
    p.add_argument("--epochs", type=int, default=6, help="with --train-self-blend")
    p.add_argument("--image-size", type=int, default=160,
                   help="with --train-self-blend: network input, px")
    p.add_argument("--mesonet", type=Path, default=SHARED.parent / "models" / "mesonet",
                   help="folder of the MesoNet .h5 weights (default: %(default)s)")
    a = p.parse_args()
    start = time.perf_counter()
    models = {"reference": a.reference}
    if a.train_self_blend:
        models["self-blend only"] = train_self_blend(a.train_self_blend, SHARED, a.epochs,
                                                     a.image_size)
    elif a.self_blend:
        models["self-blend only"] = a.self_blend
    trained = time.perf_counter()
    run_evaluation(models, a.mesonet, SHARED)
    print(f"\ntraining took {trained - start:.0f} s, "
          f"evaluation {time.perf_counter() - trained:.0f} s")


if __name__ == "__main__":
    main()
