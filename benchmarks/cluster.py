"""Cluster benchmark: quality of each method on labelled faces, speed and memory of the whole
stage at DFDC scale, and how much of the people the subset keeps.

    .venv/bin/python benchmarks/cluster.py [--skip-120k]

Labelled sets: the soccer photos of ../shared/data (encoded by the encode stage, each photo's
largest face scored) and synthetic DFDC-like encodings. Baseline: the seed's method (PCA 50,
3-D t-SNE perplexity 50, DBSCAN eps 1, min_samples 5), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, peak_rss_mb, print_table, run_child  # noqa: E402

from deepfake_lib.core.storage import RunDir  # noqa: E402
from deepfake_lib.data.dataset import MANIFEST_SCHEMA  # noqa: E402
from deepfake_lib.media import faces  # noqa: E402
from deepfake_lib.models.cluster_methods import (  # noqa: E402
    METHODS,
    ClusterParams,
    adjusted_rand,
    cluster_encodings,
    synthetic_encodings,
)
from deepfake_lib.stages.cluster import ClusterConfig, load_encodings, run_cluster  # noqa: E402
from deepfake_lib.stages.encode import ENCODING_SCHEMA  # noqa: E402


def _truth_with_strays(labels: np.ndarray) -> np.ndarray:
    return np.where(labels < 0, -1 - np.arange(len(labels)), labels)


def soccer_encodings(tmp: Path) -> tuple[np.ndarray, list, np.ndarray]:
    import pandas as pd

    from deepfake_lib.execution.connect import init_ray
    from deepfake_lib.stages.encode import EncodeConfig, run_encode

    init_ray(num_cpus=2)
    out = tmp / "soccer"
    run_encode(EncodeConfig(data=(str(SHARED / "faces" / "soccer"),), out=str(out),
                            progress_every_s=60))
    meta, x = load_encodings(RunDir(str(out)))
    ids = pd.read_csv(SHARED / "faces" / "soccer" / "identities.csv").set_index("file").identity
    main = np.asarray(meta.column("face_index").to_numpy() == 0)
    return x, ids.loc[np.asarray(meta.column("video_id").to_pylist())[main]].tolist(), main


def quality(tmp: Path) -> None:
    x, truth, main = soccer_encodings(tmp)
    other, other_truth = synthetic_encodings(8, 20, noise_fraction=0.1, seed=7)
    rows = []
    for method in METHODS[1:]:
        start = time.perf_counter()
        soccer = cluster_encodings(x, ClusterParams(method=method))
        seconds = time.perf_counter() - start
        synth = cluster_encodings(other, ClusterParams(method=method))
        rows.append([method, adjusted_rand(truth, soccer.labels[main]), soccer.n_clusters,
                     soccer.n_noise, adjusted_rand(_truth_with_strays(other_truth), synth.labels),
                     seconds])
    seed_ari = next(r for r in rows if r[0] == "seed")[1]
    for r in rows:
        r.append(r[1] - seed_ari)
    print_table("Cluster: quality, no parameters given (soccer: 5 players, 145 faces; "
                "synthetic: 8 people x 20 + 10% strays)",
                ["method", "ARI soccer", "clusters", "noise", "ARI synthetic", "seconds soccer",
                 "ARI gain over seed"], rows)


def write_synthetic_run(out: str, n_people: int, per_person: int, fakes_per_real: int = 0,
                        noise_fraction: float = 0.05, chunk: int = 5000) -> np.ndarray:
    """A run directory with synthetic encodings (one face per real video) and a manifest in
    which each real has ``fakes_per_real`` fakes. Returns the true identity per video."""
    x, truth = synthetic_encodings(n_people, per_person, noise_fraction, seed=11)
    run = RunDir(out)
    thumb = faces.encode_jpeg(np.full((96, 96, 3), 128, np.uint8))
    ids = [f"r{i:07d}.mp4" for i in range(len(x))]
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        n = len(ids[part])
        run.write_parquet(f"encodings/{start:08d}.parquet", pa.table({
            "video_id": ids[part], "part": ["p0"] * n, "label": ["REAL"] * n,
            "original": [None] * n, "frame_index": [0] * n, "face_index": [0] * n,
            "top": [0] * n, "right": [96] * n, "bottom": [96] * n, "left": [0] * n,
            "det_score": [1.0] * n, "encoding": pa.FixedSizeListArray.from_arrays(
                pa.array(x[part].ravel()), 128), "thumb": [thumb] * n}, schema=ENCODING_SCHEMA))
    fakes = [f"f{i:07d}_{k}.mp4" for i in range(len(x)) for k in range(fakes_per_real)]
    rows = {"video_id": ids + fakes, "path": [""] * (len(ids) + len(fakes)),
            "part": ["p0"] * (len(ids) + len(fakes)),
            "label": ["REAL"] * len(ids) + ["FAKE"] * len(fakes),
            "original": [None] * len(ids) + [ids[i] for i in range(len(x))
                                              for _ in range(fakes_per_real)],
            "split": ["train"] * (len(ids) + len(fakes)),
            "exists": [False] * (len(ids) + len(fakes)),
            "media": ["video"] * (len(ids) + len(fakes))}
    run.write_parquet("manifest.parquet", pa.table(rows, schema=MANIFEST_SCHEMA))
    return truth


def speed(skip_120k: bool) -> None:
    sizes = [(500, 40)] + ([] if skip_120k else [(500, 228)])
    rows = []
    for people, per in sizes:
        ours = run_child(__file__, str(people), str(per), "auto")
        rows.append([f"{ours['faces']:,}", "auto (tsne_dbscan)", ours["seconds"],
                     ours["peak_rss_mb"], ours["ari"], ours["clusters"]])
        if per == 40:
            seed = run_child(__file__, str(people), str(per), "seed")
            rows.append([f"{seed['faces']:,}", "seed (baseline)", seed["seconds"],
                         seed["peak_rss_mb"], seed["ari"], seed["clusters"]])
            rows.append(["", "ratio seed/ours", seed["seconds"] / ours["seconds"],
                         seed["peak_rss_mb"] / ours["peak_rss_mb"], "-", "-"])
    print_table(f"Cluster: the whole stage (figures included) on synthetic DFDC-like encodings, "
                f"{people} people", ["faces", "method", "seconds", "peak MB", "ARI", "clusters"],
                rows)


def subset() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        truth = write_synthetic_run(tmp, 500, 40, fakes_per_real=5, noise_fraction=0.0)
        summary = run_cluster(ClusterConfig(out=tmp, figures=False))
        chosen = RunDir(tmp).read_parquet("subset.parquet").to_pylist()
        reals = [r for r in chosen if r["label"] == "REAL"]
        people = {int(truth[int(r["video_id"][1:8])]) for r in reals}
        fakes_ok = all(r["original"] in {x["video_id"] for x in reals}
                       for r in chosen if r["label"] == "FAKE")
    print_table("Cluster: subset of a DFDC-like set (500 people x 40 real videos, 5 fakes each)",
                ["measure", "value", "target"], [
                    ["people kept", len(people) / 500, ">= 0.95"],
                    ["share of real videos kept", len(reals) / summary.reals, "<= 0.25"],
                    ["fakes kept (all of the chosen reals')",
                     sum(r["label"] == "FAKE" for r in chosen), f"{5 * len(reals)}"],
                    ["every fake's original chosen", fakes_ok, "True"]])


def child(people: str, per: str, method: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        truth = write_synthetic_run(tmp, int(people), int(per))
        start = time.monotonic()
        summary = run_cluster(ClusterConfig(out=tmp, params=ClusterParams(method=method)))
        seconds = time.monotonic() - start
        labels = RunDir(tmp).read_parquet("clusters.parquet").column("cluster").to_numpy()
    print(json.dumps({"faces": summary.faces, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
                      "clusters": summary.clusters,
                      "ari": adjusted_rand(_truth_with_strays(truth), labels)}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--skip-120k", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        quality(Path(tmp))
    subset()
    speed(a.skip_120k)


if __name__ == "__main__":
    main()
