"""Encode benchmark: recall, seconds per video against the seed's settings, scaling over Ray
workers, and the driver's peak memory as the number of listed videos grows.

    .venv/bin/python benchmarks/encode.py [--baseline-videos N] [--skip-memory]

The seed's settings: dlib's CNN detector on the first frame resized to 960 px on its long
side, encodings with num_jitters=10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, peak_rss_mb, print_table, run_child  # noqa: E402

from deepfake_lib.data.dataset import build_manifest  # noqa: E402
from deepfake_lib.media import faces  # noqa: E402
from deepfake_lib.stages.encode import EncodeConfig, encode_video  # noqa: E402


def recall_and_speed(baseline_videos: int) -> None:
    rows = build_manifest(str(SHARED / "videos")).table.to_pylist()
    ours_detector = faces.get_face_detector("auto")
    seed_detector = faces.DlibDetector("cnn", max_side=960)
    ours_config = EncodeConfig((), "unused")
    seed_config = EncodeConfig((), "unused", tries=1, num_jitters=10)
    table, results = [], {"ours": [], "seed": []}
    for i, row in enumerate(rows):
        ours = encode_video(row, ours_detector, ours_config)[0]
        seed = encode_video(row, seed_detector, seed_config)[0] if i < baseline_videos else None
        results["ours"].append(ours)
        if seed:
            results["seed"].append(seed)
        table.append([row["video_id"], row["label"] or "-", ours["n_faces"], ours["frames_tried"],
                      ours["decode_s"], ours["detect_s"], ours["encode_s"], ours["seconds"],
                      seed["n_faces"] if seed else "-", seed["seconds"] if seed else "-"])
    print_table("Per video (ours: auto detector; seed: dlib CNN at 960 px, num_jitters 10)",
                ["video", "label", "faces", "frames tried", "decode s", "detect s", "encode s",
                 "total s", "seed faces", "seed total s"], table)

    def stats(items, only_real=False):
        chosen = [r for r, row in zip(items, rows) if not only_real or row["label"] != "FAKE"]
        return (sum(r["n_faces"] > 0 for r in chosen) / len(chosen),
                statistics.mean(r["seconds"] for r in chosen))

    n = len(results["seed"])
    ours_real = stats(results["ours"], only_real=True)
    multi = next(r for r in results["ours"] if r["video_id"] == "multi_person_1080p.mp4")
    table = [["videos with a face (real and unlabelled, all)", ours_real[0], "-", "-"],
             ["faces in multi_person_1080p.mp4", multi["n_faces"], "-", "-"]]
    if n:
        ours_all, seed_all = stats(results["ours"][:n]), stats(results["seed"])
        table = [[f"videos with a face (same {n} videos)", ours_all[0], seed_all[0],
                  seed_all[0] / ours_all[0]],
                 [f"seconds per video (same {n} videos)", ours_all[1], seed_all[1],
                  seed_all[1] / ours_all[1]], *table]
    print_table("Encode: recall and speed", ["measure", "ours", "seed", "ratio seed/ours"], table)


def _link_folder(folder: Path, sources: list[Path], count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        src = sources[i % len(sources)]
        os.symlink(src, folder / f"{i:06d}{src.suffix}")
    return folder


def scaling_and_memory(skip_memory: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    reals = [SHARED / "videos" / p for p in ("ffpp/004.mp4", "ffpp/519.mp4", "ffpp/634.mp4",
                                             "clips/news_anchor.mp4", "dfdc/lynaeydofd.mp4")]
    videos = _link_folder(tmp / "videos", reals, 60)
    rates = {}
    for cpus in (1, 2):
        result = run_child(__file__, str(videos), str(tmp / f"run{cpus}"), str(cpus), "4")
        rates[cpus] = result["videos"] / result["seconds"]
    print_table("Encode: scaling over Ray workers (60 videos, 1080p/720p/480p mix)",
                ["workers", "videos/s", "ratio to 1 worker"],
                [[c, rates[c], rates[c] / rates[1]] for c in (1, 2)])
    if skip_memory:
        return
    import cv2

    blank = tmp / "blank.jpg"
    cv2.imwrite(str(blank), np.full((32, 32, 3), 127, np.uint8))
    rows = []
    for count in (100, 10_000):
        folder = _link_folder(tmp / f"list{count}", [blank], count)
        result = run_child(__file__, str(folder), str(tmp / f"mem{count}"), "2", "64")
        rows.append([count, result["python_peak_mb"], result["peak_rss_mb"], result["seconds"]])
    print_table("Encode: driver memory vs listed videos (faceless 32-px photos); RSS includes "
                "Ray's mapped object store", ["videos", "driver Python peak MB",
                                              "driver peak RSS MB", "seconds"],
                [*rows, ["ratio", rows[1][1] / rows[0][1], rows[1][2] / rows[0][2], "-"]])


def child(data: str, out: str, cpus: str, batch: str) -> None:
    from deepfake_lib.execution.connect import init_ray
    from deepfake_lib.stages.encode import run_encode

    init_ray(num_cpus=int(cpus))
    tracemalloc.start()
    start = time.monotonic()
    summary = run_encode(EncodeConfig(data=(data,), out=out, batch_size=int(batch),
                                      progress_every_s=60))
    seconds = time.monotonic() - start
    print(json.dumps({"videos": summary.videos, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
                      "python_peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--baseline-videos", type=int, default=11,
                   help="videos to run the seed's settings on (about 18 s each)")
    p.add_argument("--skip-memory", action="store_true")
    a = p.parse_args()
    recall_and_speed(a.baseline_videos)
    scaling_and_memory(a.skip_memory)


if __name__ == "__main__":
    main()
