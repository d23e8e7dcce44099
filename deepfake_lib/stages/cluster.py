"""The cluster stage: the unique people in a run's encodings, the smaller data set, figures.

Reads ``RUN/encodings/`` (and ``RUN/manifest.parquet`` for the fake-to-original links) and
writes::

    RUN/clusters.parquet   one row per face: video_id, frame_index, face_index, cluster (-1 =
                           noise), pca_x, pca_y, tsne_x, tsne_y
    RUN/subset.parquet     the chosen real videos (a few per cluster) and every fake made from
                           them: video_id, part, label, original, cluster
    RUN/figures/           frames.png, pca_faces.png, tsne_faces.png, clusters.png,
                           clusters/cluster_<id>.png (one montage per person)
    RUN/cluster.json       parameters used and the summary

A cluster's id comes from its members (:func:`cluster_methods.content_ids` of the smallest
``video_id:frame_index:face_index``), so a rerun on more data keeps each person's id unless
their first member changes. A video belongs to the cluster of its largest face
(``face_index`` 0). Runs in one process:
the encodings of 120,000 faces take about 60 MB; thumbnails are read file by file, and only
those drawn.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfake_lib.core import records, storage
from deepfake_lib.core.checks import at_least, location, validate
from deepfake_lib.core.progress import format_seconds
from deepfake_lib.core.storage import RunDir
from deepfake_lib.execution.steps import check_stage, record_finish, record_start
from deepfake_lib.media import faces, figures, video
from deepfake_lib.models.cluster_methods import (
    Clustering,
    ClusterParams,
    cluster_encodings,
    content_ids,
)

CLUSTER_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("frame_index", pa.int32()), ("face_index", pa.int16()),
    ("cluster", pa.int32()), ("pca_x", pa.float32()), ("pca_y", pa.float32()),
    ("tsne_x", pa.float32()), ("tsne_y", pa.float32()),
])

SUBSET_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("part", pa.string()), ("label", pa.string()),
    ("original", pa.string()), ("cluster", pa.int32()),
])

FACE_COLUMNS = ["video_id", "part", "label", "original", "frame_index", "face_index", "encoding"]


@dataclass(frozen=True)
class ClusterConfig:
    out: str = field(metadata=location())
    params: ClusterParams = ClusterParams()
    per_cluster: int = field(default=3, metadata=at_least(1))  # real videos chosen per person
    include_noise: bool = False    # also keep real videos whose face is noise
    figures: bool = True
    # faces per cluster montage (10 x 10)
    montage_max: int = field(default=100, metadata=at_least(1, flag=False))
    # thumbnails on the PCA and t-SNE canvases
    scatter_max: int = field(default=1500, metadata=at_least(0, flag=False))
    overwrite: bool = False        # replace clusters made with other settings

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class ClusterSummary:
    out: str
    faces: int = 0
    clusters: int = 0
    noise: int = 0
    reals: int = 0
    subset_reals: int = 0
    subset_fakes: int = 0
    clusters_covered: float = 0.0
    params: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        """Someone is in the smaller data set (else prepare has nothing to do)."""
        return self.subset_reals > 0

    def text(self) -> str:
        return (f"cluster: {self.faces} faces, {self.clusters} clusters, {self.noise} noise; "
                f"subset: {self.subset_reals} of {self.reals} real videos and "
                f"{self.subset_fakes} fakes, covering {self.clusters_covered:.0%} of clusters; "
                f"{self.params.get('method')} in {format_seconds(self.seconds)}; "
                f"output in {self.out}")


def load_encodings(run: RunDir) -> tuple[pa.Table, np.ndarray]:
    """Face rows (without thumbnails) and their encodings as an ``(n, 128)`` float32 array."""
    if not run.list("encodings", ".parquet"):
        raise ValueError(f"no encodings in {run.uri('encodings')}: run jobs/encode.py first")
    table = run.read_parquet("encodings", columns=FACE_COLUMNS)
    flat = pc.list_flatten(table.column("encoding")).to_numpy(zero_copy_only=False)
    return table.drop_columns(["encoding"]), flat.astype(np.float32).reshape(-1, 128)


def video_clusters(meta: pa.Table, labels: np.ndarray) -> dict[str, int]:
    """Each video's cluster: that of its largest face."""
    ids = meta.column("video_id").to_pylist()
    main = meta.column("face_index").to_numpy() == 0
    return {ids[i]: int(labels[i]) for i in np.flatnonzero(main)}


def choose_subset(clusters_of: dict[str, int], manifest: pa.Table | None, per_cluster: int,
                  include_noise: bool = False) -> pa.Table:
    """Up to ``per_cluster`` real videos per cluster (those with the most fakes first, so the
    subset keeps many training pairs) and every fake whose original is chosen."""
    rows = manifest.to_pylist() if manifest is not None else []
    info = {r["video_id"]: r for r in rows}
    fakes_of: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["label"] == "FAKE" and r["original"]:
            fakes_of[r["original"]].append(r)
    by_cluster: dict[int, list[str]] = defaultdict(list)
    for vid, cluster in clusters_of.items():
        if info.get(vid, {}).get("label") == "FAKE":
            continue  # with --all, fakes are encoded too; the subset picks originals
        by_cluster[cluster].append(vid)
    chosen = []
    for cluster, vids in sorted(by_cluster.items()):
        vids = sorted(vids, key=lambda v: (-len(fakes_of[v]), v))
        if cluster >= 0:
            vids = vids[:per_cluster]
        elif not include_noise:
            continue
        for vid in vids:
            meta = info.get(vid, {})
            chosen.append({"video_id": vid, "part": meta.get("part"), "label": meta.get("label"),
                           "original": None, "cluster": cluster})
            chosen += [{"video_id": f["video_id"], "part": f["part"], "label": "FAKE",
                        "original": vid, "cluster": cluster}
                       for f in sorted(fakes_of[vid], key=lambda f: f["video_id"])]
    return pa.Table.from_pylist(chosen, schema=SUBSET_SCHEMA)


def _thumbs(run: RunDir, wanted: set[int]) -> dict[int, bytes]:
    """JPEG thumbnails of the face rows ``wanted`` (global row numbers), one file at a time."""
    out: dict[int, bytes] = {}
    offset = 0
    for name in run.list("encodings", ".parquet"):
        table = run.read_parquet(f"encodings/{name}", columns=["thumb"])
        hits = [i for i in range(offset, offset + table.num_rows) if i in wanted]
        column = table.column("thumb")
        out.update((i, column[i - offset].as_py()) for i in hits)
        offset += table.num_rows
    return out


def _frame_grid(manifest: pa.Table, n: int = 16, seed: int = 0) -> np.ndarray | None:
    """A middle frame of up to ``n`` videos picked at random, side by side."""
    rows = [r for r in manifest.to_pylist() if r["exists"]]
    if not rows:
        return None
    rng = np.random.default_rng(seed)
    frames = []
    for i in rng.permutation(len(rows))[: n * 2]:
        try:
            with storage.local_copy(rows[i]["path"]) as path:
                info = video.probe(path)
                mid = info.frame_count // 2
                frames.append(video.read_frames(path, [mid])[mid])
        except video.VideoError:
            continue
        if len(frames) == n:
            break
    cols = min(4, len(frames))
    return figures.grid(frames, cols, (320, 180)) if frames else None


def write_figures(run: RunDir, config: ClusterConfig, result: Clustering,
                  manifest: pa.Table | None) -> list[str]:
    """Write the stage's figures; returns their names under ``RUN/figures``."""
    rng = np.random.default_rng(config.params.seed)
    labels = result.labels
    n = len(labels)
    scatter = set(rng.permutation(n)[: config.scatter_max].tolist())
    members: dict[int, list[int]] = defaultdict(list)
    for i in rng.permutation(n):
        if labels[i] >= 0 and len(members[labels[i]]) < config.montage_max:
            members[int(labels[i])].append(int(i))
    jpegs = _thumbs(run, scatter | {i for rows in members.values() for i in rows})
    thumbs = {i: faces.decode_image(b) for i, b in jpegs.items()}
    written = []

    def put(name: str, data: bytes) -> None:
        run.write_bytes(f"figures/{name}", data)
        written.append(name)

    order = sorted(scatter)
    for name, coords in (("pca_faces.png", result.pca), ("tsne_faces.png", result.tsne)):
        put(name, figures.png_bytes(figures.thumbnail_scatter(
            coords[order], [thumbs[i] for i in order], labels=labels[order])))
    put("clusters.png", figures.cluster_scatter(result.tsne, labels, "DBSCAN/HDBSCAN on t-SNE"))
    for cluster, rows in sorted(members.items()):
        put(f"clusters/cluster_{cluster}.png",
            figures.png_bytes(figures.montage([thumbs[i] for i in rows])))
    grid = _frame_grid(manifest, seed=config.params.seed) if manifest is not None else None
    if grid is not None:
        put("frames.png", figures.png_bytes(grid))
    return written


def cluster_inputs(run: RunDir, config: ClusterConfig) -> str:
    """A digest of what the stage reads from the run: the encode stage's batch files."""
    return records.folder_digest(run, "encodings")


def run_cluster(config: ClusterConfig) -> ClusterSummary:
    """Run the cluster stage on ``config.out``. Raises ValueError when there is nothing to
    cluster (no encodings, or fewer faces than :data:`cluster_methods.MIN_FACES`), or when
    the run holds clusters made with other settings (unless ``overwrite``): the later stages
    were made from them. More encodings than last time are simply clustered again."""
    start = time.monotonic()
    run = RunDir(config.out)
    check_stage(run, "cluster", config, use_ray=False)
    inputs = cluster_inputs(run, config)
    meta, encodings = load_encodings(run)
    record_start(run, "cluster", config, inputs=inputs)
    result = cluster_encodings(encodings, config.params)
    keys = [f"{v}:{f}:{i}" for v, f, i in zip(meta.column("video_id").to_pylist(),
                                              meta.column("frame_index").to_pylist(),
                                              meta.column("face_index").to_pylist())]
    result = replace(result, labels=content_ids(result.labels, keys))
    run.write_parquet("clusters.parquet", pa.table({
        "video_id": meta.column("video_id"), "frame_index": meta.column("frame_index"),
        "face_index": meta.column("face_index"), "cluster": result.labels.astype(np.int32),
        "pca_x": result.pca[:, 0].astype(np.float32), "pca_y": result.pca[:, 1].astype(np.float32),
        "tsne_x": result.tsne[:, 0].astype(np.float32),
        "tsne_y": result.tsne[:, 1].astype(np.float32)}, schema=CLUSTER_SCHEMA))

    manifest = run.read_parquet("manifest.parquet") if run.exists("manifest.parquet") else None
    clusters_of = video_clusters(meta, result.labels)
    subset = choose_subset(clusters_of, manifest, config.per_cluster, config.include_noise)
    run.write_parquet("subset.parquet", subset)
    if config.figures:
        write_figures(run, config, result, manifest)

    labels = subset.column("label").to_pylist()
    covered = {c for c in subset.column("cluster").to_pylist() if c >= 0}
    fakes = _fakes(manifest) if manifest is not None else set()
    reals = [v for v in clusters_of if v not in fakes]
    summary = ClusterSummary(
        out=run.location, faces=len(encodings), clusters=result.n_clusters, noise=result.n_noise,
        reals=len(reals), subset_reals=sum(label != "FAKE" for label in labels),
        subset_fakes=sum(label == "FAKE" for label in labels),
        clusters_covered=len(covered) / result.n_clusters if result.n_clusters else 0.0,
        params=result.used, seconds=time.monotonic() - start)
    record_finish(run, "cluster", config, summary, inputs)
    return summary


def _fakes(manifest: pa.Table) -> set[str]:
    label = manifest.column("label")
    return set(manifest.filter(pc.equal(label, "FAKE")).column("video_id").to_pylist())
