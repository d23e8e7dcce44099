"""The prepare stage: training crops with masks of the altered pixels, over Ray tasks.

Units of work, one row each in the plan:

- ``pair``: a fake and its original. Faces are tracked in the original (same pixels outside the
  face, as the DFDC winners did), and every ``every``-th frame the same box is cropped from
  both; the fake's crop gets the mask :func:`masks.diff_mask` of the two (label 1).
  A fake crop whose mask is (almost) empty, an unswapped bystander in a fake video, is
  dropped rather than labelled fake.
- ``real``: a real video: its crops with empty masks (label 0).
- ``photo``: a photo (a one-frame real video from a folder of photos): as ``real``, always in
  the ``train`` split (it has no fake to validate on).

Real and photo crops carry their face's landmarks, from which the train stage makes fresh
pseudo-fakes every epoch (:mod:`deepfake_lib.blend`). Crops are cut with twice the model's
crop margin (:class:`deepfake_lib.model.ModelConfig`), so training can vary the framing
around the margin the score stage uses.

Over ``RUN/subset.parquet`` when the cluster stage made one, else over every video found.
The split is by identity: a whole cluster (or, for videos outside any cluster, a real video
with all its fakes) goes to ``train`` or ``val``. Outputs, per batch and atomically::

    RUN/crops/<batch>.parquet          CROP_SCHEMA (written last: marks the batch done)
    RUN/prepare_errors/<batch>.parquet the encode stage's ERROR_SCHEMA, stage "prepare"
    RUN/figures/masks.png              rows of real | fake | mask
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfake_lib import batches, faces, figures, masks, storage, video
from deepfake_lib.batches import TaskOptions
from deepfake_lib.blend import self_blend
from deepfake_lib.checks import SEED, above, at_least, between, location, validate
from deepfake_lib.dataset import IMAGE_EXTENSIONS, build_manifest
from deepfake_lib.encode import ERROR_SCHEMA
from deepfake_lib.model import ModelConfig
from deepfake_lib.progress import format_seconds
from deepfake_lib.storage import RunDir
from deepfake_lib.tracks import detect_frames, track_faces

CROP_SCHEMA = pa.schema([
    ("sample_id", pa.string()),      # video_id:frame:track:kind, unique
    ("video_id", pa.string()),       # the video the image comes from
    ("original_id", pa.string()),    # its real original (itself for reals)
    ("frame_index", pa.int32()),
    ("track_id", pa.int16()),
    ("kind", pa.string()),           # pair, real, photo
    ("label", pa.int8()),            # 1 = fake
    ("image", pa.binary()),          # PNG, RGB, crop_size square
    ("mask", pa.binary()),           # PNG, one channel of 0/1
    ("face_box", pa.list_(pa.int32(), 4)),      # top, right, bottom, left in the crop's pixels
    ("landmarks", pa.list_(pa.float32())),      # x0, y0, x1, y1, ... (72 points; reals only)
    ("cluster", pa.int32()),         # identity cluster (-1: noise or unknown)
    ("split", pa.string()),          # train or val
])

PLAN_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("path", pa.string()), ("original_id", pa.string()),
    ("original_path", pa.string()), ("kind", pa.string()), ("cluster", pa.int32()),
    ("split", pa.string()),
])

FOLDERS = ("crops", "prepare_errors")


@dataclass(frozen=True)
class PrepareConfig:
    data: tuple[str, ...] = field(metadata=location(many=True))
    out: str = field(metadata=location())
    # crop every k-th frame (30 crops from a 10-s DFDC clip)
    every: int = field(default=10, metadata=at_least(1))
    crop_size: int = field(default=256, metadata=at_least(1))
    # grown on each side, times the face size
    margin: float = field(default=2 * ModelConfig.crop_margin, metadata=at_least(0))
    detect_every_s: float = field(default=1.0, metadata=above(0))
    detector: str = "mtcnn"
    max_tracks: int = field(default=4, metadata=at_least(1))  # largest faces per frame
    mask_method: str = masks.DEFAULT_METHOD
    # fake crops with less altered area are dropped
    min_mask_share: float = field(default=masks.MIN_FAKE_SHARE,
                                  metadata=between(0, 1, flag=False))
    val_fraction: float = field(default=0.2, metadata=between(0, 1, high_open=True))
    batch_size: int = field(default=4, metadata=at_least(1))
    seed: int = field(default=0, metadata=SEED)
    overwrite: bool = False
    tasks: TaskOptions = TaskOptions()

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class PrepareSummary:
    out: str
    units: int = 0
    crops: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    split_by: dict[str, int] = field(default_factory=dict)  # units split by person or by video
    errors: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batches_skipped: int = 0
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return bool(self.crops)

    def text(self) -> str:
        crops = ", ".join(f"{n} {k}" for k, n in sorted(self.crops.items())) or "none"
        splits = ", ".join(f"{n} {k}" for k, n in sorted(self.splits.items())) or "none"
        errors = ", ".join(f"{n} {k}" for k, n in sorted(self.errors.items())) or "none"
        text = (f"prepare: {self.units} videos/pairs; crops: {crops}; split: {splits}; "
                f"errors: {errors}; {self.batches} batches ({self.batches_skipped} already done); "
                f"{format_seconds(self.seconds)}; output in {self.out}")
        if self.split_by.get("video"):
            text += (f"\nprepare: {self.split_by['video']} videos/pairs have no identity cluster "
                     "and were split by original video, but one person can appear in several "
                     "originals: run jobs/encode.py and jobs/cluster.py first to split by person")
        return text


def assign_splits(groups: list[str], val_fraction: float) -> dict[str, str]:
    """``train``/``val`` per identity group, by a hash of its name (stable as data grows);
    with two groups or more, at least one of each."""
    ranks = {g: int(hashlib.sha1(g.encode()).hexdigest(), 16) / 16**40 for g in set(groups)}
    split = {g: "val" if r < val_fraction else "train" for g, r in ranks.items()}
    ordered = sorted(ranks, key=ranks.get)
    if len(ordered) >= 2 and "val" not in split.values() and val_fraction > 0:
        split[ordered[0]] = "val"
    if len(ordered) >= 2 and "train" not in split.values():
        split[ordered[-1]] = "train"
    return split


def make_plan(run: RunDir, config: PrepareConfig) -> tuple[pa.Table, list[dict]]:
    """The units of work (:data:`PLAN_SCHEMA`) and the error rows of fakes that cannot be
    paired (their original is absent)."""
    manifest = {r["video_id"]: r for r in build_manifest(list(config.data)).table.to_pylist()
                if r["exists"]}
    if run.exists("subset.parquet"):
        chosen = {r["video_id"]: r for r in run.read_parquet("subset.parquet").to_pylist()}
        cluster_of = {v: (r["cluster"] if r["cluster"] is not None else -1)
                      for v, r in chosen.items()}
    else:
        chosen = dict.fromkeys(manifest)
        cluster_of = {}
        if run.exists("clusters.parquet"):  # DFDC actors recur across originals: split by person
            from deepfake_lib.clustering import video_clusters  # noqa: PLC0415

            clusters = run.read_parquet("clusters.parquet", ["video_id", "face_index", "cluster"])
            cluster_of = video_clusters(clusters, clusters.column("cluster").to_numpy())
    units, errors = [], []
    for vid in sorted(chosen):
        row = manifest.get(vid)
        if row is None:
            errors.append({"video_id": vid, "stage": "prepare", "kind": "missing",
                           "message": f"{vid} is in the subset but not found under --data"})
            continue
        if row["label"] == "FAKE":
            original = manifest.get(row["original"] or "")
            if original is None:
                errors.append({"video_id": vid, "stage": "prepare", "kind": "no_original",
                               "message": f"original {row['original']!r} of {vid} is not present"})
                continue
            units.append({"video_id": vid, "path": row["path"], "original_id": original["video_id"],
                          "original_path": original["path"], "kind": "pair"})
        else:
            photo = os.path.splitext(row["path"])[1].lower() in IMAGE_EXTENSIONS
            units.append({"video_id": vid, "path": row["path"], "original_id": vid,
                          "original_path": row["path"], "kind": "photo" if photo else "real"})
    groups = {}
    for unit in units:
        cluster = cluster_of.get(unit["original_id"], cluster_of.get(unit["video_id"], -1))
        unit["cluster"] = cluster
        groups[unit["video_id"]] = f"cluster:{cluster}" if cluster >= 0 else f"video:{unit['original_id']}"
    split = assign_splits(list(groups.values()), config.val_fraction)
    for unit in units:
        unit["split"] = "train" if unit["kind"] == "photo" else split[groups[unit["video_id"]]]
    return pa.Table.from_pylist(units, schema=PLAN_SCHEMA), errors


def _landmarks(crop: np.ndarray, box: faces.Box) -> list[float]:
    """The landmarks of the face at ``box`` in ``crop`` as face_recognition groups dlib's 68
    (72 points: the lips' corners twice), flattened ``x0, y0, ...``."""
    marks = faces.face_landmarks(crop, [box])
    points = [c for feature in marks[0].values() for p in feature for c in p] if marks else []
    return [float(c) for c in points]


def prepare_unit(unit: dict, detector: faces.FaceDetector, config: PrepareConfig) -> list[dict]:
    """The crop rows of one unit of work (raises ``video.VideoError`` for an unreadable video)."""
    with storage.local_copy(unit["original_path"]) as original_path:
        info = video.probe(original_path)
        indices = list(range(0, info.frame_count, config.every))
        # one decoding pass for the detection frames and the cropped ones
        originals = video.read_frames(
            original_path, set(indices) | set(detect_frames(info, config.detect_every_s)))
        tracks = track_faces(original_path, detector, config.detect_every_s, frames=originals)
    fakes = {}
    if unit["kind"] == "pair":
        with storage.local_copy(unit["path"]) as fake_path:
            count = video.probe(fake_path).frame_count
            indices = [i for i in indices if i < count]
            fakes = video.read_frames(fake_path, indices)
    rows = []
    empty = figures.png_bytes(np.zeros((config.crop_size,) * 2, np.uint8))
    for index in indices:
        present = sorted(tracks.boxes_at(index), key=lambda tb: -(tb[1][2] - tb[1][0]))
        for track_id, box in present[: config.max_tracks]:
            real_crop, inner = faces.crop_face_with_box(originals[index], box, config.margin,
                                                         config.crop_size)
            base = {"video_id": unit["video_id"], "original_id": unit["original_id"],
                    "frame_index": index, "track_id": track_id, "cluster": unit["cluster"],
                    "split": unit["split"], "kind": unit["kind"], "face_box": list(inner)}
            if unit["kind"] == "pair":
                fake_crop, _ = faces.crop_face_with_box(fakes[index], box, config.margin,
                                                        config.crop_size)
                mask = masks.diff_mask(real_crop, fake_crop, config.mask_method)
                if mask.mean() < config.min_mask_share:
                    continue  # this face was not swapped: it is no example of a fake
                rows.append({**base, "label": 1, "image": figures.png_bytes(fake_crop),
                             "mask": figures.png_bytes(mask), "landmarks": []})
            else:
                rows.append({**base, "label": 0, "image": figures.png_bytes(real_crop),
                             "mask": empty, "landmarks": _landmarks(real_crop, inner)})
    for row in rows:
        row["sample_id"] = f"{row['video_id']}:{row['frame_index']}:{row['track_id']}:{row['kind']}"
    return rows


def prepare_batch(name: str, units: pa.Table, run: RunDir, config: PrepareConfig) -> dict:
    """Prepare one batch of units; writes its errors, then its crops."""
    detector = faces.get_face_detector(config.detector)
    rows, errors = [], []
    for unit in units.to_pylist():
        try:
            found = prepare_unit(unit, detector, config)
            if not found:
                errors.append({"video_id": unit["video_id"], "stage": "prepare", "kind": "no_face",
                               "message": f"no face tracked in {unit['original_id']}"})
            rows += found
        except video.VideoError as exc:
            errors.append({"video_id": unit["video_id"], "stage": "prepare", "kind": exc.kind,
                           "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one video's failure must not end the batch
            errors.append({"video_id": unit["video_id"], "stage": "prepare", "kind": "error",
                           "message": f"{type(exc).__name__}: {exc}"})
    run.write_parquet(f"prepare_errors/{name}.parquet", pa.Table.from_pylist(errors, ERROR_SCHEMA))
    run.write_parquet(f"crops/{name}.parquet", pa.Table.from_pylist(rows, CROP_SCHEMA))
    return {"units": units.num_rows, "crops": len(rows), "errors": len(errors)}


def _record_failed_batch(run: RunDir, name: str, units: pa.Table, exc: Exception) -> dict:
    ids = units.column("video_id").to_pylist()
    run.write_parquet(f"prepare_errors/{name}.parquet",
                      pa.Table.from_pylist(batches.failure_rows(ids, "prepare", exc), ERROR_SCHEMA))
    return {"units": len(ids), "crops": 0, "errors": len(ids)}


def _mask_figure(run: RunDir, rows: int = 6) -> None:
    """``figures/masks.png``: rows of real | fake | mask: fakes of the pairs first (one per
    video before a second of any), then self-blends of real crops as training makes them."""
    pairs, reals = [], []
    for name in run.list("crops", ".parquet"):
        table = run.read_parquet(f"crops/{name}")
        pairs += table.filter(pc.equal(table.column("kind"), "pair")).slice(0, rows).to_pylist()
        reals += table.filter(pc.not_equal(table.column("kind"), "pair")).to_pylist()
        if len({c["video_id"] for c in pairs}) >= rows:
            break
    seen: dict[str, int] = {}
    for c in pairs:
        seen[c["video_id"]] = seen.get(c["video_id"], -1) + 1
        c["_rank"] = seen[c["video_id"]]
    real_of = {f"{r['original_id']}:{r['frame_index']}:{r['track_id']}": r["image"] for r in reals}
    tiles = []
    for c in sorted(pairs, key=lambda c: c["_rank"])[:rows]:
        fake = faces.decode_image(c["image"])
        real = real_of.get(f"{c['original_id']}:{c['frame_index']}:{c['track_id']}")
        tiles += [faces.decode_image(real) if real else np.zeros_like(fake), fake,
                  faces.decode_image(c["mask"]) * 255]
    rng = np.random.default_rng(0)
    for r in [r for r in reals if r["landmarks"]][: rows - len(tiles) // 3]:
        real = faces.decode_image(r["image"])
        fake, mask = self_blend(real, np.reshape(r["landmarks"], (-1, 2)), rng)
        tiles += [real, fake, np.repeat(mask[..., None] * 255, 3, axis=2)]
    if tiles:
        run.write_bytes("figures/masks.png", figures.png_bytes(figures.grid(tiles, 3, (256, 256))))


def run_prepare(config: PrepareConfig) -> PrepareSummary:
    """Run the prepare stage. Raises ValueError when there is nothing to prepare."""
    from deepfake_lib.runtime import init_ray  # noqa: PLC0415

    init_ray()
    start = time.monotonic()
    run = RunDir(config.out)
    plan, unpaired = make_plan(run, config)
    if plan.num_rows == 0:
        raise ValueError(f"nothing to prepare under {', '.join(config.data)}")
    planned = batches.plan(plan, config.batch_size)
    done = batches.done_batches(run, "crops", {n for n, _ in planned}, config.overwrite, FOLDERS)
    if unpaired:
        run.write_parquet("prepare_errors/unpaired.parquet",
                          pa.Table.from_pylist(unpaired, ERROR_SCHEMA))
    todo = [(n, rows) for n, rows in planned if n not in done]
    batches.run_batches(prepare_batch, todo, (run, config), config.tasks, "prepare",
                        lambda name, rows, exc: _record_failed_batch(run, name, rows, exc))
    _mask_figure(run)
    crops = run.read_parquet("crops", columns=["kind", "split"])
    errors = (run.read_parquet("prepare_errors", columns=["kind"]).column("kind").to_pylist()
              if run.list("prepare_errors") else [])
    summary = PrepareSummary(
        out=run.location, units=plan.num_rows,
        crops=dict(Counter(crops.column("kind").to_pylist())),
        splits=dict(Counter(crops.column("split").to_pylist())), errors=dict(Counter(errors)),
        split_by=dict(Counter("person" if c >= 0 else "video" for c, k in zip(
            plan.column("cluster").to_pylist(), plan.column("kind").to_pylist()) if k != "photo")),
        batches=len(planned), batches_skipped=len(done), seconds=time.monotonic() - start)
    run.write_json("prepare.json", {"config": asdict(config), "summary": asdict(summary)})
    return summary
