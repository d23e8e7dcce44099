"""The encode stage: sample frames, find faces, compute 128-d encodings, over Ray tasks.

For each selected video (REAL and unlabelled ones by default; all with ``all_videos``) the
first frame with a face is found by trying ``tries`` frames ``try_every_s`` seconds apart,
and every face in it is encoded. Videos are grouped into deterministic batches; one Ray task
handles one batch and writes, atomically and under the batch's name::

    RUN/errors/<batch>.parquet      one row per video that failed or had no face
    RUN/videos/<batch>.parquet      one row per video: properties, status, faces, seconds
    RUN/encodings/<batch>.parquet   one row per face (written last: it marks the batch done)

so a rerun skips finished batches and a retried task overwrites its own files. The driver
holds the manifest (a compact Arrow table) and a bounded number of task references, never the
encodings. At the end ``RUN/manifest.parquet`` joins the manifest with the video properties.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from deepfake_lib.core import storage
from deepfake_lib.core.checks import above, at_least, location, validate
from deepfake_lib.core.faults import NO_FAULTS, Faults
from deepfake_lib.core.progress import format_seconds
from deepfake_lib.core.records import ERROR_SCHEMA
from deepfake_lib.core.storage import RunDir
from deepfake_lib.data.dataset import build_manifest
from deepfake_lib.execution import batches
from deepfake_lib.execution.resources import Resources
from deepfake_lib.execution.steps import (
    BatchPlan,
    check_stage,
    record_finish,
    record_start,
)
from deepfake_lib.media import faces, video

ENCODING_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("part", pa.string()),
    ("label", pa.string()),
    ("original", pa.string()),
    ("frame_index", pa.int32()),
    ("face_index", pa.int16()),      # 0 = largest face in the frame
    ("top", pa.int32()),             # box in pixels of the original (upright) frame
    ("right", pa.int32()),
    ("bottom", pa.int32()),
    ("left", pa.int32()),
    ("det_score", pa.float32()),
    ("encoding", pa.list_(pa.float32(), 128)),
    ("thumb", pa.binary()),          # JPEG of the face with a margin, thumb_px square
])

VIDEO_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("frame_count", pa.int32()),
    ("fps", pa.float32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("rotation", pa.int16()),
    ("status", pa.string()),         # ok, no_face, timeout, error
    ("n_faces", pa.int16()),
    ("frames_tried", pa.int16()),
    ("seconds", pa.float32()),       # wall time for this video in its task, of which:
    ("decode_s", pa.float32()),      # probing and decoding frames
    ("detect_s", pa.float32()),      # face detection
    ("encode_s", pa.float32()),      # encodings and thumbnails
    ("node", pa.string()),           # the Ray node that encoded it
])

FOLDERS = ("errors", "videos", "encodings")


@dataclass(frozen=True)
class EncodeConfig:
    """Settings of the encode stage (the job's flags)."""

    data: tuple[str, ...] = field(metadata=location(many=True))
    out: str = field(metadata=location())
    all_videos: bool = False
    detector: str = "auto"
    tries: int = field(default=3, metadata=at_least(1))
    try_every_s: float = field(default=2.0, metadata=above(0))
    num_jitters: int = field(default=1, metadata=at_least(1))
    thumb_px: int = field(default=96, metadata=at_least(1, flag=False))
    batch_size: int = field(default=8, metadata=at_least(1))
    # per video, then a timeout row and on to the next
    video_timeout_s: float = field(default=600.0, metadata=above(0))
    shared_fs: bool = False          # local paths are mounted on every node
    overwrite: bool = False
    # measured: 1.4 GB peak for a 1080p video (the face models take 0.9 of it)
    tasks: Resources = Resources("task", cpus=1.0, memory_gb=1.5)
    retries: int = field(default=3, metadata=at_least(0, flag=False))  # per failed task
    progress_every_s: float = field(default=10.0, metadata=at_least(0, flag=False))

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class EncodeSummary:
    out: str
    videos: int = 0
    encoded: int = 0
    faces: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batches_skipped: int = 0
    seconds: float = 0.0
    problems: dict[str, int] = field(default_factory=dict)  # manifest problems by kind

    @property
    def succeeded(self) -> bool:
        return self.encoded > 0

    def text(self) -> str:
        rate = self.videos / self.seconds if self.seconds else 0.0
        errors = ", ".join(f"{n} {k}" for k, n in sorted(self.errors.items())) or "none"
        problems = ", ".join(f"{n} {k}" for k, n in sorted(self.problems.items())) or "none"
        return (f"encode: {self.videos} videos, {self.encoded} with faces, {self.faces} faces; "
                f"errors: {errors}; {self.batches} batches ({self.batches_skipped} already done); "
                f"{format_seconds(self.seconds)} ({rate:.2f} videos/s); "
                f"manifest problems: {problems}; output in {self.out}")


def plan_batches(manifest: pa.Table, config: EncodeConfig) -> list[tuple[str, pa.Table]]:
    """The videos to encode, sorted by (part, video_id), cut into named batches."""
    if not config.all_videos:
        label = manifest.column("label")
        manifest = manifest.filter(pc.or_kleene(pc.is_null(label), pc.equal(label, "REAL")))
    manifest = manifest.sort_by([("part", "ascending"), ("video_id", "ascending")])
    return batches.plan(manifest, config.batch_size, group="part",
                        content=("label", "original"))


def encode_video(row: dict, detector: faces.FaceDetector, config: EncodeConfig,
                 faults: Faults = NO_FAULTS) -> tuple[dict, list[dict], dict | None]:
    """Encode the faces of one video (a manifest row).

    Returns ``(video row, face rows, error row or None)``; never raises for a bad video.
    """
    start = time.perf_counter()
    vid = row["video_id"]
    faults.maybe_slow(vid)
    info_row = {"video_id": vid, "status": "error", "n_faces": 0, "frames_tried": 0,
                "decode_s": 0.0, "detect_s": 0.0, "encode_s": 0.0}
    clock = time.perf_counter

    def lap(key: str, since: float) -> float:
        now = clock()
        info_row[key] += now - since
        return now

    face_rows: list[dict] = []
    error = None
    try:
        with storage.local_copy(row["path"]) as path:
            t = clock()
            info = video.probe(path)
            info_row.update(frame_count=info.frame_count, fps=info.fps, width=info.width,
                            height=info.height, rotation=info.rotation)
            for index in video.frame_indices_every(info, config.try_every_s, limit=config.tries):
                frame = video.read_frames(path, [index])[index]
                info_row["frames_tried"] += 1
                t = lap("decode_s", t)
                found = detector.detect(frame)
                t = lap("detect_s", t)
                if not found:
                    continue
                boxes = [d.box for d in found]
                encodings = faces.encode_faces(frame, boxes, config.num_jitters)
                for k, (det, enc) in enumerate(zip(found, encodings)):
                    top, right, bottom, left = det.box
                    thumb = faces.crop_face_with_box(frame, det.box, 0.2, config.thumb_px)[0]
                    face_rows.append({
                        "video_id": vid, "part": row["part"], "label": row["label"],
                        "original": row["original"], "frame_index": index, "face_index": k,
                        "top": top, "right": right, "bottom": bottom, "left": left,
                        "det_score": det.score, "encoding": enc.tolist(),
                        "thumb": faces.encode_jpeg(thumb),
                    })
                lap("encode_s", t)
                break
        if face_rows:
            info_row.update(status="ok", n_faces=len(face_rows))
        else:
            info_row["status"] = "no_face"
            error = {"kind": "no_face", "message": f"no face in {info_row['frames_tried']} frames "
                     f"{config.try_every_s:g} s apart (detector {detector.name})"}
    except video.VideoError as exc:
        error = {"kind": exc.kind, "message": str(exc)}
    except FileNotFoundError as exc:
        error = {"kind": "missing", "message": f"{row['path']}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - one video's failure must not end the batch
        error = {"kind": "error", "message": f"{type(exc).__name__}: {exc}"}
    if error is not None:
        error = {"video_id": vid, "stage": "encode", **error}
    info_row["seconds"] = time.perf_counter() - start
    return info_row, face_rows, error


def encode_batch(name: str, rows: pa.Table, run: RunDir, config: EncodeConfig,
                 faults: Faults = NO_FAULTS) -> dict:
    """Encode one batch and write its three files; returns small counts for progress."""
    detector = faces.get_face_detector(config.detector)
    infos, encodings, errors = [], [], []
    for i, row in enumerate(rows.to_pylist()):
        try:
            info_row, face_rows, error = batches.call_within(
                config.video_timeout_s, lambda row=row: encode_video(row, detector, config, faults))
        except TimeoutError as exc:
            info_row, face_rows = {"video_id": row["video_id"], "status": "timeout",
                                   "seconds": config.video_timeout_s}, []
            error = {"video_id": row["video_id"], "stage": "encode", "kind": "timeout",
                     "message": str(exc)}
        infos.append(info_row)
        encodings += face_rows
        errors += [error] if error else []
        if i == 0:
            faults.crash_once()
    node = batches.current_node()
    run.write_parquet(f"errors/{name}.parquet", pa.Table.from_pylist(errors, ERROR_SCHEMA))
    run.write_parquet(f"videos/{name}.parquet", pa.Table.from_pylist(
        [{**info, "node": node} for info in infos], VIDEO_SCHEMA))
    run.write_parquet(f"encodings/{name}.parquet", pa.Table.from_pylist(encodings, ENCODING_SCHEMA))
    return {"units": rows.num_rows, "faces": len(encodings), "errors": len(errors)}


def _record_failed_batch(run: RunDir, name: str, rows: pa.Table, exc: Exception) -> dict:
    """A batch whose task failed on every retry: one error row per video. No encodings file
    is written, so the next run tries the batch again."""
    ids = rows.column("video_id").to_pylist()
    run.write_parquet(f"errors/{name}.parquet",
                      pa.Table.from_pylist(batches.failure_rows(ids, "encode", exc), ERROR_SCHEMA))
    run.write_parquet(f"videos/{name}.parquet", pa.Table.from_pylist(
        [{"video_id": v, "status": "error"} for v in ids], VIDEO_SCHEMA))
    return {"units": len(ids), "faces": 0, "errors": len(ids)}


def _write_manifest(run: RunDir, manifest: pa.Table) -> None:
    """``manifest.parquet``: every input video, joined with the properties found by the tasks
    (null for videos that were not encoded, e.g. fakes without ``all_videos``)."""
    try:
        props = run.read_parquet("videos")
    except FileNotFoundError:
        props = VIDEO_SCHEMA.empty_table()
    table = manifest.join(props, "video_id", join_type="left outer")
    run.write_parquet("manifest.parquet", table.sort_by([("part", "ascending"),
                                                         ("video_id", "ascending")]))


def _summarise(run: RunDir, summary: EncodeSummary) -> EncodeSummary:
    props = run.read_parquet("videos", columns=["status"]) if run.list("videos") else None
    if props is not None:
        statuses = Counter(props.column("status").to_pylist())
        summary.videos = props.num_rows
        summary.encoded = statuses.get("ok", 0)
    if run.list("errors"):
        kinds = run.read_parquet("errors", ["kind"]).column("kind").to_pylist()
        summary.errors = dict(Counter(kinds))
    if run.list("encodings"):
        summary.faces = run.read_parquet("encodings", ["video_id"]).num_rows
    return summary


def run_encode(config: EncodeConfig, faults: Faults = NO_FAULTS) -> EncodeSummary:
    """Run the encode stage on the Ray cluster this process is connected to (or a local one).

    Raises ``ValueError`` only when nothing can be done (no input video) or the run directory
    was written by a different plan; every per-video problem becomes an error row.
    ``faults`` is for tests: a worker dies after the first video of its first batch, or a
    video is stuck.
    """
    start = time.monotonic()
    run = RunDir(config.out)
    check_stage(run, "encode", config, locations=config.data)
    manifest = build_manifest(list(config.data), exclude=[config.out])
    if manifest.problems.num_rows:  # written even when no video is left to encode
        run.write_parquet("manifest_problems.parquet", manifest.problems)
    planned = plan_batches(manifest.table, config)
    if not planned:
        raise ValueError(f"no video to encode under {', '.join(config.data)} "
                         f"({manifest.summary()})")
    done = record_start(run, "encode", config, batches=BatchPlan(planned, "encodings", FOLDERS))
    todo = [(name, rows) for name, rows in planned if name not in done]
    batches.run_batches(encode_batch, todo, (run, config, faults), config.tasks, config.retries,
                        "encode", lambda name, rows, exc: _record_failed_batch(run, name, rows,
                                                                               exc),
                        config.progress_every_s)

    _write_manifest(run, manifest.table)
    summary = _summarise(run, EncodeSummary(
        out=run.location, batches=len(planned), batches_skipped=len(done),
        problems=dict(Counter(manifest.problems.column("kind").to_pylist()))))
    summary.seconds = time.monotonic() - start
    record_finish(run, "encode", config, summary)
    return summary
