"""Report benchmark: seconds to write ``RUN/report.html`` for a synthetic run of N scored videos
(default 1,000): every stage's record, errors of each stage, manifest problems, the figures at
their real sizes (t-SNE and PCA canvases of 1,500 thumbnails, cluster montages), a
leaderboard, and videos (links to the shared videos) of which the most confidently wrong get
pictures drawn by the default model (random weights: speed does not depend on them).

    .venv/bin/python benchmarks/report.py [--videos 1000 10000]

Two rows per size: the first write, which draws the pictures of the wrong videos, and a
rewrite (what every later stage pays: the pictures are kept). Target: under 5 s at 1,000.
Run it with OMP_NUM_THREADS=1 for CPU seconds that stand for an idle machine's wall time.
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
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402
from score import default_model  # noqa: E402

from deepfake_lib.core import records  # noqa: E402
from deepfake_lib.core.records import ERROR_SCHEMA  # noqa: E402
from deepfake_lib.core.storage import RunDir  # noqa: E402
from deepfake_lib.data.dataset import PROBLEM_SCHEMA  # noqa: E402
from deepfake_lib.media import figures
from deepfake_lib.models.leaderboard import leaderboard, roc_calibration_png  # noqa: E402
from deepfake_lib.report.html import WRONG, most_wrong, write_report  # noqa: E402
from deepfake_lib.stages.cluster import ClusterConfig, ClusterSummary  # noqa: E402
from deepfake_lib.stages.encode import EncodeConfig, EncodeSummary  # noqa: E402
from deepfake_lib.stages.prepare import PrepareConfig, PrepareSummary  # noqa: E402
from deepfake_lib.stages.score import SCORE_SCHEMA, ScoreConfig, ScoreSummary  # noqa: E402
from deepfake_lib.stages.train import TrainConfig, TrainSummary  # noqa: E402

SOURCES = sorted((SHARED / "videos").glob("*/*.mp4"))


def _data(folder: Path, n: int, rng: np.random.Generator) -> dict[str, int]:
    """``n`` videos (links to the shared ones) with a metadata.json; their labels."""
    folder.mkdir(parents=True)
    labels = {f"v{i:05d}.mp4": int(rng.random() < 0.5) for i in range(n)}
    for i, name in enumerate(labels):
        os.symlink(SOURCES[i % len(SOURCES)], folder / name)
    (folder / "metadata.json").write_text(json.dumps(
        {name: {"label": "FAKE" if y else "REAL"} for name, y in labels.items()}))
    return labels


def _figures(run: RunDir, rng: np.random.Generator) -> None:
    def thumbs(k: int) -> list[np.ndarray]:  # smooth colour gradients, like faces compress
        base = np.linspace(0, 1, 96)[None, :, None] * np.linspace(0, 1, 96)[:, None, None]
        return [(base * rng.integers(60, 255, 3)).astype(np.uint8) for _ in range(k)]

    coords, labels = rng.normal(size=(1500, 2)), rng.integers(-1, 40, 1500)
    for name in ("pca_faces.png", "tsne_faces.png"):
        run.write_bytes(f"figures/{name}", figures.png_bytes(
            figures.thumbnail_scatter(coords, thumbs(1500), labels=labels)))
    run.write_bytes("figures/clusters.png", figures.cluster_scatter(coords, labels, "t-SNE"))
    run.write_bytes("figures/frames.png", figures.png_bytes(figures.grid(thumbs(8), 4,
                                                                         (320, 180))))
    run.write_bytes("figures/masks.png", figures.png_bytes(figures.grid(thumbs(24), 3,
                                                                        (256, 256))))
    for c in range(40):
        run.write_bytes(f"figures/clusters/cluster_{c}.png",
                        figures.png_bytes(figures.montage(thumbs(100))))


def _errors(names: list[str], stage: str, rng: np.random.Generator) -> pa.Table:
    kinds = ("no_face", "corrupt", "truncated", "empty")
    picked = rng.choice(len(names), size=len(names) // 20, replace=False)
    return pa.Table.from_pylist([{"video_id": names[i], "stage": stage, "kind": kinds[k % 4],
                                  "message": f"{kinds[k % 4]}: {names[i]}: what went wrong"}
                                 for k, i in enumerate(picked)], ERROR_SCHEMA)


def build_run(root: Path, n: int, model_dir: str) -> RunDir:
    """A run directory as the five stages leave it, for ``n`` videos."""
    rng = np.random.default_rng(0)
    data = root / "data"
    labels = _data(data, n, rng)
    run = RunDir(str(root / "run"))
    names = sorted(labels)
    run.write_parquet("manifest_problems.parquet", pa.Table.from_pylist(
        [{"part": "data", "video_id": names[i], "kind": "not_in_metadata",
          "message": f"{names[i]} is not in metadata.json"} for i in range(0, n, 50)],
        PROBLEM_SCHEMA))
    for at in range(0, n, 64):
        run.write_parquet(f"errors/{at:06d}.parquet", _errors(names[at:at + 64], "encode", rng))
        run.write_parquet(f"prepare_errors/{at:06d}.parquet",
                          _errors(names[at:at + 64], "prepare", rng))
    statuses = rng.choice(["ok", "ok", "ok", "ok", "partial", "no_face", "timeout", "error"], n)
    rows = [{"video_id": v, "prob": float(np.clip(rng.beta(2, 2), 0.01, 0.99)), "status": s,
             "message": "" if s == "ok" else f"{s}: why", "n_faces": 32, "n_tracks": 1,
             "n_frames": 32, "seconds": float(rng.uniform(0.5, 3)), "decode_s": 0.5,
             "locate_s": 0.5, "classify_s": 0.5, "label": labels[v]}
            for v, s in zip(names, statuses)]
    for at in range(0, n, 64):
        run.write_parquet(f"scores/{at:06d}.parquet",
                          pa.Table.from_pylist(rows[at:at + 64], SCORE_SCHEMA))
    board = leaderboard(rows)
    run.write_json("leaderboard.json", board)
    run.write_bytes("figures/roc_calibration.png", roc_calibration_png(rows))
    _figures(run, rng)
    out = run.location
    records.write(run, "encode", EncodeConfig(data=(str(data),), out=out), None, EncodeSummary(
        out, videos=n, encoded=n - n // 20, faces=n, errors={"no_face": n // 20},
        batches=n // 8, seconds=900.0))
    records.write(run, "cluster", ClusterConfig(out=out), "x", ClusterSummary(
        out, faces=n, clusters=40, noise=30, reals=n, subset_reals=120, subset_fakes=360,
        clusters_covered=1.0, params={"method": "hdbscan"}, seconds=30.0))
    records.write(run, "prepare", PrepareConfig(data=(str(data),), out=out), None, PrepareSummary(
        out, units=480, crops={"pair": 9000, "real": 4000}, splits={"train": 10000},
        split_by={"person": 480}, errors={"no_face": 24}, batches=60, seconds=1200.0))
    records.write(run, "train", TrainConfig(out=out), "y", TrainSummary(
        f"{out}/model", epochs=4, best_epoch=3, best={"val_auc": 0.7, "val_logloss": 0.66},
        seconds=1500.0))
    records.write(run, "score", ScoreConfig(data=(str(data),), out=out, model=model_dir),
                  "model-digest", ScoreSummary(out, videos=n, statuses={"ok": n},
                                               leaderboard=board, seconds=2000.0))
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--videos", type=int, nargs="+", default=[1000])
    a = p.parse_args()
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = default_model(Path(tmp))
        for n in a.videos:
            run = build_run(Path(tmp) / f"run{n}", n, model_dir)
            wrong = most_wrong(run.read_parquet("scores").to_pylist())
            drawn = ", ".join(sorted({Path(os.readlink(Path(tmp) / f"run{n}" / "data" /
                                                       r["video_id"])).name for r in wrong}))
            for what in (f"first write: draws {len(wrong)} pictures ({drawn})",
                         "rewrite: pictures kept (each later stage)"):
                start, cpu = time.perf_counter(), time.process_time()
                write_report(run.location)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                size = os.path.getsize(Path(run.location) / "report.html")
                table.append([n, what, seconds, cpu, f"{size / 1e6:.1f} MB"])
    print_table(f"Report: seconds to write RUN/report.html ({WRONG} wrong videos drawn at most; "
                f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; target: < 5 s "
                "at 1,000 videos; CPU s: this process's CPU time, the wall time of an idle "
                "machine with OMP_NUM_THREADS=1)", ["videos", "write", "seconds", "CPU s", "page"],
                table)


if __name__ == "__main__":
    main()
