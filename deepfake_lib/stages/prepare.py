"""The prepare stage: training crops with masks of the altered pixels, over Ray tasks.

A unit of work (one row of the plan) is an original with every fake made from it: the
original is decoded and its faces tracked once (DFDC makes about five fakes of each), and
every ``every``-th frame its tracked boxes are cropped from it and from each fake (same
pixels outside the face, as the DFDC winners did). Crop kinds:

- ``pair``: a fake's crop with the mask :func:`masks.diff_mask` of it and the original's
  (label 1). A fake crop whose mask is (almost) empty, an unswapped bystander in a fake
  video, is dropped rather than labelled fake; a fake with no crop left is an ``unaltered``
  error row.
- ``real``: the original's crops with empty masks (label 0), when the original itself is in
  the plan (it is not when only its fakes were chosen).
- ``photo``: a photo (a one-frame real video from a folder of photos): as ``real``, always in
  the ``train`` split (it has no fake to validate on).
- ``crop``: a face of a folder of labelled crops (``--labelled``,
  :mod:`deepfake_lib.data.labelled_crops`), stored as it is with the whole image as its face box. A
  real crop has an empty mask and landmarks (it seeds pseudo-fakes as ``real`` does); a fake
  crop has no mask (empty bytes): training uses it for the label only.

Batches weigh their units by the videos they decode, so an original with many fakes does not
make one batch far longer than the others.

Real and photo crops carry their face's landmarks, from which the train stage makes fresh
pseudo-fakes every epoch (:mod:`deepfake_lib.media.blend`). Crops are cut with twice the model's
crop margin (:class:`deepfake_lib.models.detector.ModelConfig`), so training can vary the framing
around the margin the score stage uses.

Over ``RUN/subset.parquet`` when the cluster stage made one, else over every video found.
The split is by identity: a whole cluster (or, for videos outside any cluster, a real video
with all its fakes) goes to ``train`` or ``val``. Labelled crops are split the same way, by
people found with the pipeline's own encode and cluster code: each family's stand-in face is
encoded (``RUN/labelled/``, a batch per Ray task) and the encodings clustered
(:func:`deepfake_lib.models.cluster_methods.cluster_encodings`). Labelled crops and videos are
clustered apart: one person in both can land in ``train`` on one side and ``val`` on the
other. Outputs, per batch and atomically::

    RUN/crops/<batch>.parquet          CROP_SCHEMA (written last: marks the batch done)
    RUN/prepare_errors/<batch>.parquet records.ERROR_SCHEMA, stage "prepare"
    RUN/figures/masks.png              rows of real | fake | mask
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfake_lib.core import storage
from deepfake_lib.core.checks import SEED, above, at_least, between, location, validate
from deepfake_lib.core.faults import NO_FAULTS, Faults
from deepfake_lib.core.progress import format_seconds
from deepfake_lib.core.records import ERROR_SCHEMA
from deepfake_lib.core.storage import RunDir
from deepfake_lib.data import labelled_crops
from deepfake_lib.data.dataset import build_manifest
from deepfake_lib.execution import batches
from deepfake_lib.execution.resources import Resources
from deepfake_lib.execution.steps import (
    BatchPlan,
    check_stage,
    record_finish,
    record_start,
)
from deepfake_lib.media import faces, figures, masks, video
from deepfake_lib.media.blend import self_blend
from deepfake_lib.media.tracks import detect_frames, track_faces
from deepfake_lib.media.video import IMAGE_EXTENSIONS
from deepfake_lib.models.detector import ModelConfig

CROP_SCHEMA = pa.schema([
    ("sample_id", pa.string()),      # video_id:frame:track:kind, unique
    ("video_id", pa.string()),       # the video the image comes from
    ("original_id", pa.string()),    # its real original (itself for reals)
    ("frame_index", pa.int32()),
    ("track_id", pa.int16()),
    ("kind", pa.string()),           # pair, real, photo, crop
    ("label", pa.int8()),            # 1 = fake
    ("image", pa.binary()),          # PNG (a crop: its file's JPEG or PNG), RGB
    ("mask", pa.binary()),           # PNG, one channel of 0/1; empty: not known
    ("face_box", pa.list_(pa.int32(), 4)),      # top, right, bottom, left in the crop's pixels
    ("landmarks", pa.list_(pa.float32())),      # x0, y0, x1, y1, ... (72 points; reals only)
    ("cluster", pa.int32()),         # identity cluster (-1: noise or unknown)
    ("split", pa.string()),          # train or val
    ("node", pa.string()),           # the Ray node that prepared it
])

PLAN_SCHEMA = pa.schema([
    ("video_id", pa.string()),       # the original
    ("path", pa.string()),
    ("kind", pa.string()),           # real (a video) or photo
    ("real", pa.bool_()),            # crop the original itself (it is in the plan)
    ("fake_ids", pa.list_(pa.string())),
    ("fake_paths", pa.list_(pa.string())),
    ("videos", pa.int32()),          # videos decoded: the original and its fakes
    ("cluster", pa.int32()),
    ("split", pa.string()),
    ("unit_id", pa.string()),        # what a batch is made of: the original's video id
])

FOLDERS = ("crops", "prepare_errors")
LABELLED_PER_BATCH = 256
# the unit training reads (about 5 MB of 256-px crops): an epoch reads each row group once,
# and validation reads its own (each split is written in row groups of its own)
CROPS_PER_ROW_GROUP = 64


@dataclass(frozen=True)
class PrepareConfig:
    data: tuple[str, ...] = field(metadata=location(many=True))   # may be empty with labelled
    out: str = field(metadata=location())
    # folders of labelled face crops (deepfake_lib.data.labelled_crops)
    labelled: tuple[str, ...] = field(default=(), metadata=location(many=True))
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
    # per video decoded, then a timeout row and on
    video_timeout_s: float = field(default=600.0, metadata=above(0))
    seed: int = field(default=0, metadata=SEED)
    shared_fs: bool = False          # local paths are mounted on every node
    overwrite: bool = False
    # measured: 1.7 GB peak for a 10-s 1080p original and its fakes (models: 0.9 of it)
    tasks: Resources = Resources("task", cpus=1.0, memory_gb=2.0)
    retries: int = field(default=3, metadata=at_least(0, flag=False))  # per failed task
    progress_every_s: float = field(default=10.0, metadata=at_least(0, flag=False))

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class PrepareSummary:
    out: str
    units: int = 0                   # originals (or photos), each with its fakes
    fakes: int = 0
    crops: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    split_by: dict[str, int] = field(default_factory=dict)  # units split by person or by video
    labelled: dict = field(default_factory=dict)  # labelled crops per split (labelled_counts)
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
        text = (f"prepare: {self.units} originals with {self.fakes} fakes; crops: {crops}; "
                f"split: {splits}; "
                f"errors: {errors}; {self.batches} batches ({self.batches_skipped} already done); "
                f"{format_seconds(self.seconds)}; output in {self.out}")
        for split in ("train", "val"):
            if split in self.labelled:
                n = self.labelled[split]
                text += (f"\nprepare: labelled crops, {split}: {n['crops']} crops "
                         f"({n['fakes']} fake) of {n['families']} families, {n['people']} people")
        if self.split_by.get("video"):
            text += (f"\nprepare: {self.split_by['video']} originals have no identity cluster "
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
    listed = build_manifest(list(config.data), exclude=[config.out]).table.to_pylist()
    manifest = {r["video_id"]: r for r in listed if r["exists"]}
    if run.exists("subset.parquet"):
        chosen = {r["video_id"]: r for r in run.read_parquet("subset.parquet").to_pylist()}
        cluster_of = {v: (r["cluster"] if r["cluster"] is not None else -1)
                      for v, r in chosen.items()}
    else:
        chosen = dict.fromkeys(manifest)
        cluster_of = {}
        if run.exists("clusters.parquet"):  # DFDC actors recur across originals: split by person
            from deepfake_lib.stages.cluster import video_clusters  # noqa: PLC0415

            clusters = run.read_parquet("clusters.parquet", ["video_id", "face_index", "cluster"])
            cluster_of = video_clusters(clusters, clusters.column("cluster").to_numpy())
    units: dict[str, dict] = {}
    errors = []

    def unit_of(original: dict) -> dict:
        photo = os.path.splitext(original["path"])[1].lower() in IMAGE_EXTENSIONS
        return units.setdefault(original["video_id"], {
            "video_id": original["video_id"], "path": original["path"],
            "kind": "photo" if photo else "real", "real": False, "fake_ids": [],
            "fake_paths": []})

    for vid in sorted(chosen):
        row = manifest.get(vid)
        if row is None:
            errors.append(_error(vid, "missing", f"{vid} is in the subset but not found under "
                                 "--data"))
        elif row["label"] != "FAKE":
            unit_of(row)["real"] = True
        elif (original := manifest.get(row["original"] or "")) is None:
            errors.append(_error(vid, "no_original",
                                 f"original {row['original']!r} of {vid} is not present"))
        else:
            unit = unit_of(original)
            unit["fake_ids"].append(vid)
            unit["fake_paths"].append(row["path"])
    groups = {}
    for vid, unit in units.items():
        unit["videos"] = 1 + len(unit["fake_ids"])
        unit["cluster"] = cluster = cluster_of.get(vid, -1)
        groups[vid] = f"cluster:{cluster}" if cluster >= 0 else f"video:{vid}"
    split = assign_splits(list(groups.values()), config.val_fraction)
    for vid, unit in units.items():
        unit["split"] = "train" if unit["kind"] == "photo" else split[groups[vid]]
        unit["unit_id"] = vid
    return pa.Table.from_pylist([units[v] for v in sorted(units)], schema=PLAN_SCHEMA), errors


def _error(video_id: str, kind: str, message: str) -> dict:
    return {"video_id": video_id, "stage": "prepare", "kind": kind, "message": message}


def unit_videos(unit: dict) -> list[str]:
    """The videos a unit makes crops of: its original (when in the plan) and its fakes."""
    return ([unit["video_id"]] if unit["real"] else []) + unit["fake_ids"]


def _crop_fake(fake_id: str, fake_path: str, boxes: dict[int, list], originals: dict,
               base: dict, config: PrepareConfig) -> list[dict]:
    """The ``pair`` crops of one fake at the original's ``boxes`` (frame -> [(track, box)])."""
    with storage.local_copy(fake_path) as path:
        count = video.probe(path).frame_count
        fakes = video.read_frames(path, [i for i in boxes if i < count])
    rows = []
    for index, frame in fakes.items():
        for track_id, box in boxes[index]:
            real_crop, inner = faces.crop_face_with_box(originals[index], box, config.margin,
                                                         config.crop_size)
            fake_crop, _ = faces.crop_face_with_box(frame, box, config.margin, config.crop_size)
            mask = masks.diff_mask(real_crop, fake_crop, config.mask_method)
            if mask.mean() < config.min_mask_share:
                continue  # this face was not swapped: it is no example of a fake
            rows.append({**base, "video_id": fake_id, "frame_index": index,
                         "track_id": track_id, "kind": "pair", "label": 1,
                         "face_box": list(inner), "image": figures.png_bytes(fake_crop),
                         "mask": figures.png_bytes(mask), "landmarks": []})
    return rows


def prepare_unit(unit: dict, detector: faces.FaceDetector, config: PrepareConfig,
                 faults: Faults = NO_FAULTS) -> tuple[list[dict], list[dict]]:
    """The crop rows and error rows of one original and its fakes. Raises
    ``video.VideoError`` when the original cannot be read; a fake that cannot be read is an
    error row and the others go on."""
    faults.maybe_slow(unit["video_id"])
    with storage.local_copy(unit["path"]) as original_path:
        info = video.probe(original_path)
        indices = list(range(0, info.frame_count, config.every))
        # one decoding pass for the detection frames and the cropped ones
        originals = video.read_frames(
            original_path, set(indices) | set(detect_frames(info, config.detect_every_s)))
        tracks = track_faces(original_path, detector, config.detect_every_s, frames=originals)
    boxes = {i: sorted(tracks.boxes_at(i), key=lambda tb: -(tb[1][2] - tb[1][0]))
             [: config.max_tracks] for i in indices}
    if not any(boxes.values()):
        return [], [_error(v, "no_face", f"no face tracked in {unit['video_id']}")
                    for v in unit_videos(unit)]
    base = {"original_id": unit["video_id"], "cluster": unit["cluster"], "split": unit["split"]}
    rows, errors = [], []
    if unit["real"]:
        empty = figures.png_bytes(np.zeros((config.crop_size,) * 2, np.uint8))
        for index in indices:
            for track_id, box in boxes[index]:
                crop, inner = faces.crop_face_with_box(originals[index], box, config.margin,
                                                       config.crop_size)
                rows.append({**base, "video_id": unit["video_id"], "frame_index": index,
                             "track_id": track_id, "kind": unit["kind"], "label": 0,
                             "face_box": list(inner), "image": figures.png_bytes(crop),
                             "mask": empty, "landmarks": faces.flat_landmarks(crop, inner)})
    for fake_id, fake_path in zip(unit["fake_ids"], unit["fake_paths"]):
        try:
            crops = _crop_fake(fake_id, fake_path, boxes, originals, base, config)
        except video.VideoError as exc:
            errors.append(_error(fake_id, exc.kind, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one fake's failure must not end the unit
            errors.append(_error(fake_id, "error", f"{type(exc).__name__}: {exc}"))
            continue
        if not crops:
            errors.append(_error(fake_id, "unaltered", f"no face of {fake_id} differs from "
                                 f"{unit['video_id']} (every mask under {config.min_mask_share:g} "
                                 "of its crop)"))
        rows += crops
    for row in rows:
        row["sample_id"] = f"{row['video_id']}:{row['frame_index']}:{row['track_id']}:{row['kind']}"
    return rows, errors


def prepare_batch(name: str, units: pa.Table, run: RunDir, config: PrepareConfig,
                  faults: Faults = NO_FAULTS) -> dict:
    """Prepare one batch of units; writes its errors, then its crops. Each unit has
    ``video_timeout_s`` per video it decodes."""
    detector = faces.get_face_detector(config.detector)
    rows, errors = [], []
    for i, unit in enumerate(units.to_pylist()):
        try:
            found, failed = batches.call_within(
                config.video_timeout_s * unit["videos"],
                lambda unit=unit: prepare_unit(unit, detector, config, faults))
            rows += found
            errors += failed
        except video.VideoError as exc:
            errors += [_error(v, exc.kind, str(exc)) for v in unit_videos(unit)]
        except TimeoutError as exc:
            errors += [_error(v, "timeout", str(exc)) for v in unit_videos(unit)]
        except Exception as exc:  # noqa: BLE001 - one video's failure must not end the batch
            errors += [_error(v, "error", f"{type(exc).__name__}: {exc}")
                       for v in unit_videos(unit)]
        if i == 0:
            faults.crash_once()
    run.write_parquet(f"prepare_errors/{name}.parquet", pa.Table.from_pylist(errors, ERROR_SCHEMA))
    node = batches.current_node()
    run.write_parquet(f"crops/{name}.parquet",
                      pa.Table.from_pylist([{**r, "node": node} for r in rows], CROP_SCHEMA),
                      row_group_size=CROPS_PER_ROW_GROUP, group_by="split")
    return {"units": units.num_rows, "crops": len(rows), "errors": len(errors)}


def _record_failed_batch(run: RunDir, name: str, ids: list[str], exc: Exception) -> dict:
    """Error rows for the videos (or labelled crops) ``ids`` of a batch whose task failed."""
    run.write_parquet(f"prepare_errors/{name}.parquet",
                      pa.Table.from_pylist(batches.failure_rows(ids, "prepare", exc), ERROR_SCHEMA))
    return {"units": len(ids), "crops": 0, "errors": len(ids)}


def describe_labelled_batch(name: str, rows: pa.Table, run: RunDir) -> dict:
    """Encode the family stand-ins and find the landmarks of the real crops of one batch of
    labelled crops; writes ``RUN/labelled/<name>.parquet``. A crop that cannot be read or
    described gets an ``error`` instead."""
    out = []
    for row in rows.to_pylist():
        try:
            image = faces.decode_image(storage.read_bytes(row["path"]))
            found = labelled_crops.describe(image, encode=row["stand_in"],
                                            landmarks=row["label"] == 0)
            out.append({"sample_id": row["sample_id"], **found, "error": None})
        except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
            out.append({"sample_id": row["sample_id"], "encoding": None, "landmarks": [],
                        "height": 0, "width": 0, "error": f"{type(exc).__name__}: {exc}"})
    run.write_parquet(f"labelled/{name}.parquet", pa.Table.from_pylist(out, LABELLED_SCHEMA))
    return {"units": rows.num_rows, "errors": sum(r["error"] is not None for r in out)}


LABELLED_SCHEMA = pa.schema([*labelled_crops.DESCRIBED_SCHEMA, ("error", pa.string())])


def labelled_plan(run: RunDir, config: PrepareConfig) -> tuple[pa.Table, dict]:
    """Every crop of the ``labelled`` folders with its landmarks, identity cluster and
    split (a family's fakes go where its original goes), and the clustering's summary.
    Unreadable crops keep their ``error``."""
    labels = pa.concat_tables([labelled_crops.read_labels(f) for f in config.labelled])
    duplicated = [s for s, n in Counter(labels.column("sample_id").to_pylist()).items() if n > 1]
    if duplicated:
        raise ValueError(f"labelled crop {duplicated[0]} is listed twice: give each --labelled "
                         "folder another name, or each file one metadata.csv row")
    stand_ins = labelled_crops.family_stand_ins(labels)
    labels = labels.append_column("stand_in", pa.array(
        [s in stand_ins for s in labels.column("sample_id").to_pylist()]))
    planned = batches.plan(labels, LABELLED_PER_BATCH, key="sample_id",
                           content=("label", "stand_in"))
    done = batches.done_batches(run, "prepare_labelled", "labelled", planned, config.overwrite,
                                ("labelled",), key="sample_id")
    todo = [(n, rows) for n, rows in planned if n not in done]
    batches.run_batches(describe_labelled_batch, todo, (run,), config.tasks, config.retries,
                        "prepare: labelled crops",
                        lambda name, rows, exc: {"units": rows.num_rows, "errors": rows.num_rows},
                        config.progress_every_s)
    written = set(run.list("labelled", ".parquet"))  # a batch whose task failed has none
    described = {r["sample_id"]: r for n, _ in planned if f"{n}.parquet" in written
                 for r in run.read_parquet(f"labelled/{n}.parquet").to_pylist()}
    rows = [{**r, **described.get(r["sample_id"], {"error": "not described: its task failed"})}
            for r in labels.to_pylist()]
    encoded = [r for r in rows if r["stand_in"] and r.get("encoding") is not None]
    cluster_of: dict[str, int] = {}
    used: dict = {}
    if len(encoded) >= MIN_FACES_TO_CLUSTER:
        from deepfake_lib.models.cluster_methods import cluster_encodings  # noqa: PLC0415

        found = cluster_encodings(np.array([r["encoding"] for r in encoded], np.float32))
        cluster_of = {r["family"]: int(c) for r, c in zip(encoded, found.labels)}
        used = {"people": found.n_clusters, "unclustered_families": found.n_noise,
                "method": found.used.get("method")}
    groups = {f: f"cluster:{c}" if c >= 0 else f"family:{f}"
              for f in {r["family"] for r in rows} for c in [cluster_of.get(f, -1)]}
    split = assign_splits(list(groups.values()), config.val_fraction)
    for r in rows:
        r["cluster"] = cluster_of.get(r["family"], -1)
        r["split"] = split[groups[r["family"]]]
        r["unit_id"] = r["sample_id"]
    columns = ["unit_id", "sample_id", "path", "video_id", "family", "label", "landmarks",
               "height", "width", "cluster", "split", "error"]
    return pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows],
                                LABELLED_PLAN_SCHEMA), used


LABELLED_PLAN_SCHEMA = pa.schema([
    ("unit_id", pa.string()), ("sample_id", pa.string()), ("path", pa.string()),
    ("video_id", pa.string()), ("family", pa.string()), ("label", pa.int8()),
    ("landmarks", pa.list_(pa.float32())), ("height", pa.int32()), ("width", pa.int32()),
    ("cluster", pa.int32()), ("split", pa.string()),
    ("error", pa.string())])
# fewer family stand-ins than this: every family is its own group
MIN_FACES_TO_CLUSTER = 10


def labelled_batch(name: str, rows: pa.Table, run: RunDir) -> dict:
    """Write the ``crop`` rows of one batch of the labelled plan (the image files' bytes as
    they are, of the size found when they were described) and its error rows."""
    crops, errors = [], []
    node = batches.current_node()
    for row in rows.to_pylist():
        if row["error"]:
            errors.append(_error(row["sample_id"], "bad_image", row["error"]))
            continue
        height, width = row["height"], row["width"]
        try:
            data = storage.read_bytes(row["path"])
        except OSError as exc:
            errors.append(_error(row["sample_id"], "bad_image", f"{type(exc).__name__}: {exc}"))
            continue
        crops.append({
            "sample_id": row["sample_id"], "video_id": row["video_id"],
            "original_id": row["family"], "frame_index": 0, "track_id": 0, "kind": "crop",
            "label": row["label"], "image": data,
            "mask": b"" if row["label"] else figures.png_bytes(np.zeros((height, width),
                                                                        np.uint8)),
            "face_box": [0, width, height, 0], "landmarks": row["landmarks"] or [],
            "cluster": row["cluster"], "split": row["split"], "node": node})
    run.write_parquet(f"prepare_errors/{name}.parquet", pa.Table.from_pylist(errors, ERROR_SCHEMA))
    run.write_parquet(f"crops/{name}.parquet", pa.Table.from_pylist(crops, CROP_SCHEMA),
                      row_group_size=CROPS_PER_ROW_GROUP, group_by="split")
    return {"units": rows.num_rows, "crops": len(crops), "errors": len(errors)}


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


def run_prepare(config: PrepareConfig, faults: Faults = NO_FAULTS) -> PrepareSummary:
    """Run the prepare stage. Raises ValueError when there is nothing to prepare. ``faults``
    is for tests: a video is stuck."""
    if not config.data and not config.labelled:
        raise ValueError("nothing to prepare: give --data, --labelled or both")
    start = time.monotonic()
    run = RunDir(config.out)
    check_stage(run, "prepare", config, locations=[*config.data, *config.labelled])
    plan, unpaired = make_plan(run, config) if config.data else (pa.Table.from_pylist(
        [], PLAN_SCHEMA), [])
    if config.data and plan.num_rows == 0 and not config.labelled:
        raise ValueError(f"nothing to prepare under {', '.join(config.data)}")
    labelled, people = (labelled_plan(run, config) if config.labelled
                        else (pa.Table.from_pylist([], LABELLED_PLAN_SCHEMA), {}))
    planned = batches.plan(plan, config.batch_size, key="unit_id", weight="videos",
                           content=("kind", "real", "fake_ids", "cluster", "split"))
    planned_labelled = batches.plan(labelled, LABELLED_PER_BATCH, key="unit_id",
                                    content=("label", "cluster", "split", "error"))
    done = record_start(run, "prepare", config, batches=BatchPlan(
        planned + planned_labelled, "crops", FOLDERS, key="unit_id"))
    if unpaired:
        run.write_parquet("prepare_errors/unpaired.parquet",
                          pa.Table.from_pylist(unpaired, ERROR_SCHEMA))
    todo = [(n, rows) for n, rows in planned if n not in done]
    batches.run_batches(prepare_batch, todo, (run, config, faults), config.tasks,
                        config.retries, "prepare", lambda name, rows, exc: _record_failed_batch(
                            run, name, [v for u in rows.to_pylist() for v in unit_videos(u)], exc),
                        config.progress_every_s)
    todo = [(n, rows) for n, rows in planned_labelled if n not in done]
    batches.run_batches(labelled_batch, todo, (run,), config.tasks, config.retries,
                        "prepare: crops", lambda name, rows, exc: _record_failed_batch(
                            run, name, rows.column("sample_id").to_pylist(), exc),
                        config.progress_every_s)
    _mask_figure(run)
    crops = run.read_parquet("crops", columns=["kind", "split"])
    errors = (run.read_parquet("prepare_errors", columns=["kind"]).column("kind").to_pylist()
              if run.list("prepare_errors") else [])
    split_by = Counter("person" if c >= 0 else "video" for c, k in zip(
        plan.column("cluster").to_pylist(), plan.column("kind").to_pylist()) if k != "photo")
    summary = PrepareSummary(
        out=run.location, units=plan.num_rows,
        fakes=sum(len(f) for f in plan.column("fake_ids").to_pylist()),
        crops=dict(Counter(crops.column("kind").to_pylist())),
        splits=dict(Counter(crops.column("split").to_pylist())), errors=dict(Counter(errors)),
        split_by=dict(split_by), labelled=labelled_counts(labelled, people),
        batches=len(planned) + len(planned_labelled), batches_skipped=len(done),
        seconds=time.monotonic() - start)
    record_finish(run, "prepare", config, summary)
    return summary


def labelled_counts(labelled: pa.Table, people: dict) -> dict:
    """What the labelled crops' split holds: per split, crops, fakes, families and people
    (clusters; unclustered families count as one person each), and the clustering used."""
    out: dict = {"clustering": people} if people else {}
    rows = [r for r in labelled.to_pylist() if not r["error"]]
    for split in ("train", "val"):
        mine = [r for r in rows if r["split"] == split]
        if not mine:
            continue
        clusters = {r["cluster"] for r in mine if r["cluster"] >= 0}
        loose = {r["family"] for r in mine if r["cluster"] < 0}
        out[split] = {"crops": len(mine), "fakes": sum(r["label"] for r in mine),
                      "families": len({r["family"] for r in mine}),
                      "people": len(clusters) + len(loose)}
    return out
