"""Predict benchmark: seconds per 1080p video with the picture (classified frames, face boxes,
the decoder's mask as heat), once the model is loaded, against the baseline measured in the
same run: the score stage's per-video work (:func:`score_video`, no decoder, no picture). Then
the job end to end (Ray start, actor and model load, one video), as a user runs it.

    .venv/bin/python benchmarks/predict.py [--model DIR] [--repeats 3] [--no-job]

Without --model, the default architecture (ModelConfig(): U-Net, EfficientNet-Lite0, 224 px)
with random weights: speed does not depend on what the weights are. Target: under 3 s per
10-s 1080p video with the picture, on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402
from score import default_model  # noqa: E402

from deepfake_lib.media import faces, video  # noqa: E402
from deepfake_lib.models.detector import load_model  # noqa: E402
from deepfake_lib.stages.predict import predict_video  # noqa: E402
from deepfake_lib.stages.score import ScoreConfig, score_video  # noqa: E402

VIDEOS = [SHARED / "videos" / "dfdc" / "lynaeydofd.mp4",           # 10 s, 1920 x 1080, 1 face
          SHARED / "videos" / "dfdc" / "brtujopkby.mp4",           # 10 s, 1080 x 1920
          SHARED / "videos" / "clips" / "multi_person_1080p.mp4"]  # 4 s, 1920 x 1080, 4 faces


def _timed(function, *args) -> dict:
    """``function(*args)``'s row with ``cpu_s``: the CPU seconds of this process (with one
    thread, what the wall time is on an idle machine; a shared one stretches the wall time)."""
    start = time.process_time()
    row = function(*args)
    row["cpu_s"] = time.process_time() - start
    return row


def _median_row(rows: list[dict]) -> dict:
    return sorted(rows, key=lambda r: r["seconds"])[len(rows) // 2]


def per_video(model_dir: str, repeats: int) -> None:
    import torch

    config = ScoreConfig(data=(), out="unused")
    model = load_model(model_dir, device="cpu")
    detector = faces.make_face_detector(model.config.face_detector)
    table = []
    for path in VIDEOS:
        info = video.probe(str(path))
        base, ours = [], []
        for _ in range(repeats):  # interleaved: both see the same load on the machine
            base.append(_timed(score_video, str(path), detector, model, config, 0.5))
            ours.append(_timed(predict_video, str(path), detector, model, config, 0.5))
        b, o = _median_row(base), _median_row(ours)
        assert o["picture"], o
        name = f"{path.name} ({info.width}x{info.height}, {info.duration_s:.0f} s)"
        for method, r, runs in (("score stage (baseline)", b, base),
                                ("predict, with picture", o, ours)):
            table.append([name, method, r["status"], r["n_faces"], r["decode_s"], r["locate_s"],
                          r["classify_s"], r.get("picture_s", 0.0), r["seconds"],
                          min(x["seconds"] for x in runs), min(x["cpu_s"] for x in runs)])
        table.append([name, "ratio predict/baseline", "", "", "", "", "", "",
                      o["seconds"] / b["seconds"],
                      min(x["seconds"] for x in ours) / min(x["seconds"] for x in base),
                      min(x["cpu_s"] for x in ours) / min(x["cpu_s"] for x in base)])
    print_table(f"Predict: seconds per video once the model is loaded, median (and best) of "
                f"{repeats}, {config.frames} frames classified, {torch.get_num_threads()} torch "
                f"thread(s), {os.cpu_count()} CPUs, load "
                f"average {os.getloadavg()[0]:.1f} (target: < 3 s per 10-s 1080p video)",
                ["video", "method", "status", "faces", "decode s", "locate s", "classify s",
                 "picture s", "total s", "best s", "best CPU s"], table)


def job(model_dir: str) -> None:
    """``jobs/predict.py`` on one 10-s 1080p video, end to end, in a fresh process."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        done = subprocess.run([sys.executable, str(root / "jobs" / "predict.py"), str(VIDEOS[0]),
                               "--model", model_dir, "--out", out], capture_output=True,
                              text=True, timeout=900)
        seconds = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    line = next(x for x in done.stdout.splitlines() if x.endswith(VIDEOS[0].name))
    video_s = float(line.split()[2])
    print_table("Predict: the job end to end on one 10-s 1080p video (fresh process)",
                ["what", "seconds"],
                [["whole command (Python, Ray start, actor and model load, video)", seconds],
                 ["the video itself (its printed seconds)", video_s]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="a trained model folder (default: the default "
                   "architecture, random weights)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch and FFmpeg threads (default: this machine's CPUs, what predict's "
                        "actor has for one video)")
    p.add_argument("--no-job", action="store_true", help="skip the end-to-end job")
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # FFmpeg's, as Ray sets it in an actor
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = a.model or default_model(Path(tmp))
        per_video(model_dir, a.repeats)
        if not a.no_job:
            job(model_dir)


if __name__ == "__main__":
    main()
