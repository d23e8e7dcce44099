"""Score benchmark: seconds per 10-s 1080p DFDC video, split into decode, face localisation
and classification, against a baseline that runs the face detector on every classified frame
instead of tracking (both decode the same frames, FFmpeg skipping those no frame is predicted
from); the exact decode of every frame for scale; videos/s with 1 and 2 actors.

    .venv/bin/python benchmarks/score.py [--model DIR] [--repeats 2]

Without --model, the default architecture (ModelConfig(): U-Net, EfficientNet-Lite0, 224 px)
with random weights: speed does not depend on what the weights are. With --model, also the
accuracy of each aggregation rule on the labelled shared videos, and of the default rule with
the exact frames decoded (how much skipping frames costs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table, run_child  # noqa: E402

from deepfake_lib.media import faces, video  # noqa: E402
from deepfake_lib.models.detector import ModelConfig, build_model, load_model  # noqa: E402
from deepfake_lib.stages.score import ScoreConfig, aggregate, score_video  # noqa: E402

DFDC = [SHARED / "videos" / "dfdc" / n for n in ("lynaeydofd.mp4", "brtujopkby.mp4")]


def default_model(folder: Path) -> str:
    import torch

    config = ModelConfig(encoder_weights="none")
    torch.save(build_model(config, pretrained=False).state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(config.to_json())
    return str(folder)


def detector_on_every_frame(path: str, detector, model, config: ScoreConfig) -> dict:
    """The baseline: the same frames decoded and classified, faces found by running the
    detector on each of them rather than by tracks."""
    start = time.perf_counter()
    info = video.probe(path)
    chosen = sorted({int(round(i)) for i in np.linspace(0, info.frame_count - 1, config.frames)})
    t = time.perf_counter()
    decoded = video.read_frames_near(path, chosen)
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    found = {i: detector.detect(decoded[i])[: config.max_tracks] for i in chosen}
    locate_s = time.perf_counter() - t
    t = time.perf_counter()
    seen = model.config
    crops = [faces.crop_face_with_box(decoded[i], d.box, seen.crop_margin, seen.image_size)[0]
             for i in chosen for d in found[i]]
    probs = model.predict(crops)
    aggregate({0: probs.tolist()}, "mean")
    return {"decode_s": decode_s, "locate_s": locate_s, "classify_s": time.perf_counter() - t,
            "seconds": time.perf_counter() - start}


def per_video(model_dir: str, repeats: int) -> None:
    config = ScoreConfig(data=(), out="unused")
    model = load_model(model_dir, device="cpu")
    detector = faces.make_face_detector(model.config.face_detector)
    rows = []
    for path in DFDC:
        ours = min((score_video(str(path), detector, model, config, 0.5) for _ in range(repeats)),
                   key=lambda r: r["seconds"])
        base = min((detector_on_every_frame(str(path), detector, model, config)
                    for _ in range(repeats)), key=lambda r: r["seconds"])
        t = time.perf_counter()
        count = sum(1 for _ in video.iter_frames(str(path)))
        floor = time.perf_counter() - t
        assert ours["status"] == "ok", ours
        for name, r in (("tracks (ours)", ours), ("detector on every classified frame", base)):
            rows.append([path.name, name, r["decode_s"], r["locate_s"], r["classify_s"],
                         r["seconds"]])
        rows.append([path.name, "ratio baseline/ours", base["decode_s"] / ours["decode_s"],
                     base["locate_s"] / ours["locate_s"], base["classify_s"] / ours["classify_s"],
                     base["seconds"] / ours["seconds"]])
        rows.append([path.name, f"exact decode of all {count} frames", floor, "-", "-", floor])
    print_table(f"Score: seconds per 10-s DFDC video, {config.frames} frames classified, "
                f"{os.cpu_count()} CPU threads (target: <= 2 s)",
                ["video", "method", "decode s", "locate s", "classify s", "total s"], rows)


def exact_frames(path: str, indices, info=None) -> dict[int, np.ndarray]:
    """``video.read_frames_near``'s stand-in for the baseline: the exact frames asked for."""
    return video.read_frames(path, indices)


def aggregations(model_dir: str) -> None:
    """Each rule on the same classifications of every labelled shared video; then the default
    rule again with the exact frames decoded (the baseline for skipping the frames no other
    frame is predicted from), and how far each video's probability moved."""
    from unittest import mock

    from deepfake_lib.data.dataset import build_manifest
    from deepfake_lib.models import metrics
    from deepfake_lib.stages.score import AGGREGATIONS

    config = ScoreConfig(data=(), out="unused")
    model = load_model(model_dir, device="cpu")
    detector = faces.make_face_detector(model.config.face_detector)
    rows = [r for r in build_manifest(str(SHARED / "videos")).table.to_pylist() if r["label"]]
    scored = [score_video(r["path"], detector, model, config, 0.5) for r in rows]
    with mock.patch.object(video, "read_frames_near", exact_frames):
        exact = [score_video(r["path"], detector, model, config, 0.5) for r in rows]
    labels = np.array([r["label"] == "FAKE" for r in rows], dtype=int)
    table = []
    for rule in AGGREGATIONS:
        probs = np.clip([aggregate(s["track_probs"], rule) for s in scored], config.clip,
                        1 - config.clip)
        m = metrics.binary_scores(labels, probs)
        table.append([rule + (" (default)" if rule == config.aggregation else ""), m["logloss"],
                      m["auc"], m["accuracy"], "-"])
    m = metrics.binary_scores(labels, np.array([s["prob"] for s in exact]))
    moved = max(abs(a["prob"] - b["prob"]) for a, b in zip(scored, exact))
    table.append([f"{config.aggregation}, exact frames (baseline)", m["logloss"], m["auc"],
                  m["accuracy"], moved])
    print_table(f"Score: aggregation rules on the {len(rows)} labelled shared videos "
                f"(model {model_dir})",
                ["rule", "log loss", "AUC", "accuracy", "largest move of a probability"],
                table)


def throughput(model_dir: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_score_"))
    data = tmp / "videos"
    data.mkdir()
    sources = sorted((SHARED / "videos" / "ffpp").glob("*.mp4")) + DFDC
    for i in range(16):
        src = sources[i % len(sources)]
        os.symlink(src, data / f"{i:03d}_{src.name}")
    rates = {}
    for actors in (1, 2):
        result = run_child(__file__, str(data), str(tmp / f"run{actors}"), model_dir, str(actors))
        rates[actors] = result["videos"] / result["seconds"]
    print_table("Score: throughput over Ray actors (16 videos, 480p to 1080p)",
                ["actors", "videos/s", "ratio to 1 actor"],
                [[a, rates[a], rates[a] / rates[1]] for a in (1, 2)])


def child(data: str, out: str, model_dir: str, actors: str) -> None:
    from deepfake_lib.execution.connect import init_ray
    from deepfake_lib.execution.resources import Resources
    from deepfake_lib.stages.score import run_score

    init_ray(num_cpus=int(actors))
    start = time.monotonic()
    summary = run_score(ScoreConfig(data=(data,), out=out, model=model_dir,
                                    actors=Resources("actor", count=int(actors), cpus=None),
                                    progress_every_s=600))
    print(json.dumps({"videos": summary.videos, "seconds": time.monotonic() - start}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=None,
                   help="a trained model folder; with it, the aggregation rules and the exact "
                        "frames' accuracy are compared too")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = a.model or default_model(Path(tmp))
        per_video(model_dir, a.repeats)
        if a.model:
            aggregations(model_dir)
        throughput(model_dir)


if __name__ == "__main__":
    main()
