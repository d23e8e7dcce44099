"""The score stage: one fake probability per video, within a per-video time budget, from a
pool of Ray actors that each load the face detector and the trained model once.

Per video (:func:`score_video`): decode, in one pass, the detection frames (one a second) and
``frames`` frames to classify spread over the video; link detections into face tracks and
interpolate boxes (:mod:`deepfake_lib.media.tracks`); crop as the prepare stage does; classify in
a coarse-to-fine frame order, so that when the budget runs out the frames already classified
still span the video (the answer is *anytime*: status ``partial`` when the budget cut it
short); aggregate the crops to one probability (:func:`aggregate`); clip.

The driver keeps the budget honest (:mod:`deepfake_lib.execution.actor_pool`): a video whose
actor has not answered by budget + grace is recorded as ``timeout`` with the fallback
probability and its actor is killed and replaced; an actor that dies is replaced and its
video retried once.
Rows are written per deterministic batch (``RUN/scores/<batch>.parquet``), so a rerun scores
only what is missing; the submission and leaderboard come from
:mod:`deepfake_lib.models.leaderboard`.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfake_lib.core import storage
from deepfake_lib.core.checks import above, at_least, between, location, validate
from deepfake_lib.core.faults import NO_FAULTS, Faults
from deepfake_lib.core.progress import Progress, format_seconds
from deepfake_lib.core.storage import RunDir
from deepfake_lib.data.dataset import build_manifest
from deepfake_lib.execution import batches
from deepfake_lib.execution.actor_pool import ScorerPool, sized
from deepfake_lib.execution.batches import pending
from deepfake_lib.execution.resources import Resources, check_resources
from deepfake_lib.execution.steps import (
    BatchPlan,
    check_stage,
    record_finish,
    record_start,
)
from deepfake_lib.media import faces, video
from deepfake_lib.media.tracks import detect_frames, track_faces
from deepfake_lib.models.detector import model_digest, model_location
from deepfake_lib.models.leaderboard import (
    leaderboard,
    roc_calibration_png,
    submission_csv,
)

SCORE_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("prob", pa.float32()),          # probability that the video is fake, clipped
    ("status", pa.string()),         # one of STATUSES
    ("message", pa.string()),
    ("n_faces", pa.int32()),         # face crops classified
    ("n_tracks", pa.int32()),
    ("n_frames", pa.int32()),        # frames classified
    ("seconds", pa.float32()),       # wall time for the video, end to end
    ("decode_s", pa.float32()),
    ("locate_s", pa.float32()),      # face detection and tracking
    ("classify_s", pa.float32()),
    ("label", pa.int8()),            # 1 fake, 0 real, null unknown
])

AGGREGATIONS = ("confident", "mean", "max_track")
# ok: every chosen frame classified; partial: the budget ran out, the answer comes from the
# frames classified in time; no_face: no face tracked (fallback); timeout: no answer by budget
# + grace, the worker was killed (fallback); error: unreadable video or a failure (fallback)
STATUSES = ("ok", "partial", "no_face", "timeout", "error")


@dataclass(frozen=True)
class ScoreConfig:
    data: tuple[str, ...] = field(metadata=location(many=True))
    out: str = field(metadata=location())
    # default RUN/model
    model: str | None = field(default=None, metadata=location(optional=True))
    budget_s: float = field(default=8.0, metadata=above(0))
    grace_s: float = field(default=4.0, metadata=at_least(0))
    frames: int = field(default=32, metadata=at_least(1))  # frames classified per video
    detect_every_s: float = field(default=1.0, metadata=above(0))
    max_tracks: int = field(default=4, metadata=at_least(1, flag=False))
    aggregation: str = "confident"
    # probabilities are clipped to [clip, 1 - clip]: 0 or 1 would cost an infinite log loss
    clip: float = field(default=0.01, metadata=between(0, 0.5, low_open=True, high_open=True))
    # for videos with no answer; clipped like every probability
    fallback: float = field(default=0.5, metadata=between(0, 1))
    # default: as many as the cluster's resources allow, each with a share of the free CPUs
    # that fits every actor on a node (actor_pool.sized)
    actors: Resources = Resources("actor", cpus=None)
    # no actor ready by then: an error (a GPU node may boot slowly)
    start_timeout_s: float = field(default=600.0, metadata=above(0))
    batch_size: int = field(default=64, metadata=at_least(1))  # videos per output file
    shared_fs: bool = False           # local paths are mounted on every node
    overwrite: bool = False
    progress_every_s: float = field(default=10.0, metadata=at_least(0, flag=False))
    videos: tuple[str, ...] = ()      # only these video ids (default: every video found)
    data_name: str | None = None      # what the labelled videos are ("train" when trained on),
                                      # the leaderboard's "data"

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class ScoreSummary:
    out: str
    videos: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    leaderboard: dict | None = None
    seconds: float = 0.0
    # the pool as sized for this run (None when every video was already scored)
    actors: int | None = None
    cpus_per_actor: float | None = None

    @property
    def succeeded(self) -> bool:
        """Some video was scored by the model (not only given the fallback)."""
        return self.statuses.get("ok", 0) + self.statuses.get("partial", 0) > 0

    def text(self) -> str:
        statuses = ", ".join(f"{n} {k}" for k, n in sorted(self.statuses.items()))
        pool = (f" by {self.actors} actors of {self.cpus_per_actor:g} CPUs"
                if self.actors else "")
        text = (f"score: {self.videos} videos ({statuses}) in {format_seconds(self.seconds)}"
                f"{pool}; submission in {storage.join(self.out, 'submission.csv')}")
        if self.leaderboard:
            lb = self.leaderboard
            data = {None: "", "train": "TRAINING "}.get(lb.get("data"), f"{lb.get('data')} ")
            text += (f"\nleaderboard: log loss {lb['logloss']:.4f}, AUC {lb['auc']:.3f}, "
                     f"AP {lb['ap']:.3f}, accuracy {lb['accuracy']:.3f} on {lb['count']} "
                     f"labelled {data}videos; seconds per video p50 {lb['time_p50']:.2f}, "
                     f"p95 {lb['time_p95']:.2f}, max {lb['time_max']:.2f}")
            if lb.get("data") == "train":
                text += ("\n(the model was trained on these videos' people: the board says "
                         "nothing of how it does on new people)")
        return text


def aggregate(track_probs: dict[int, list[float]], rule: str = "confident") -> float:
    """One probability from per-track frame probabilities.

    ``mean``: all crops alike. ``max_track``: each track's mean, then the most fake track.
    ``confident``: the DFDC winner's rule as published, over all crops of the video: if more
    than 11 crops are confidently fake (> 0.8) and they are more than ``n // 2.5`` of the
    ``n`` crops, their mean; else if more than 90% are confidently real (< 0.2), their mean;
    else the mean of all. The floor of 11 keeps a few noisy crops (a short partial answer,
    one of several people) from swinging the video to an extreme.
    """
    if rule not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {rule!r}; choose one of {', '.join(AGGREGATIONS)}")
    if not track_probs:
        raise ValueError("no track to aggregate")
    if rule == "max_track":
        return max(float(np.mean(ps)) for ps in track_probs.values())
    p = np.array([q for ps in track_probs.values() for q in ps], dtype=float)
    if rule == "confident":
        fake, real = p[p > 0.8], p[p < 0.2]
        if len(fake) > len(p) // 2.5 and len(fake) > 11:
            return float(fake.mean())
        if len(real) > 0.9 * len(p):
            return float(real.mean())
    return float(p.mean())


def coarse_to_fine(n: int) -> list[int]:
    """``0..n-1`` reordered so that every prefix is spread over the whole range."""
    order, seen, step = [], set(), 1 << max(0, (n - 1).bit_length())
    while step >= 1:
        for i in range(0, n, step):
            if i not in seen:
                seen.add(i)
                order.append(i)
        step //= 2
    return order


def score_video(path: str, face_detector: faces.FaceDetector, model, config: ScoreConfig,
                fallback: float, keep: dict | None = None) -> dict:
    """Score one video within ``config.budget_s``; never raises (failures are statuses).
    ``model`` (a :class:`deepfake_lib.models.detector.TrainedModel`) gets faces cut as it was
    trained on them: at its ``config``'s crop margin and input size (``face_detector`` should be the
    detector its config names).

    Besides the :data:`SCORE_SCHEMA` fields, the row holds ``track_probs`` (the per-track
    frame probabilities that were aggregated), which is not written out. A ``keep`` dict
    receives what a picture of the video needs: ``frames`` (the classified frames, by index)
    and ``tracks``."""
    start = time.perf_counter()
    deadline = start + config.budget_s
    seen = model.config
    row = {"status": "error", "prob": fallback, "message": "", "n_faces": 0, "n_tracks": 0,
           "n_frames": 0, "decode_s": 0.0, "locate_s": 0.0, "classify_s": 0.0}
    try:
        with storage.local_copy(path) as local:
            info = video.probe(local)
            wanted = detect_frames(info, config.detect_every_s)
            chosen = sorted({int(round(i)) for i in np.linspace(
                0, info.frame_count - 1, min(config.frames, info.frame_count))})
            t = time.perf_counter()
            decoded = video.read_frames_near(local, set(wanted) | set(chosen), info)
            row["decode_s"] = time.perf_counter() - t
            t = time.perf_counter()
            tracks = track_faces(local, face_detector, config.detect_every_s, frames=decoded)
            row["locate_s"] = time.perf_counter() - t
        row["n_tracks"] = len(tracks.tracks)
        track_probs: dict[int, list[float]] = {}
        t = time.perf_counter()
        classified = 0
        order = [chosen[i] for i in coarse_to_fine(len(chosen))]
        for begin in range(0, len(order), 8):
            if time.perf_counter() > deadline and track_probs:
                break
            crops, owners = [], []
            for index in order[begin:begin + 8]:
                present = sorted(tracks.boxes_at(index), key=lambda tb: tb[1][0] - tb[1][2])
                for track_id, box in present[: config.max_tracks]:
                    crops.append(faces.crop_face_with_box(decoded[index], box, seen.crop_margin,
                                                          seen.image_size)[0])
                    owners.append(track_id)
            classified += len(order[begin:begin + 8])
            if crops:
                for track_id, p in zip(owners, model.predict(crops)):
                    track_probs.setdefault(track_id, []).append(float(p))
        row["classify_s"] = time.perf_counter() - t
        row["n_frames"] = classified
        row["n_faces"] = sum(len(v) for v in track_probs.values())
        row["track_probs"] = track_probs
        if keep is not None:
            keep.update(frames={i: decoded[i] for i in order[:classified]}, tracks=tracks)
        if not track_probs:
            row.update(status="no_face", message="no face tracked in the video")
        elif not np.isfinite(prob := aggregate(track_probs, config.aggregation)):
            row.update(status="error", message="the model gave no number (nan) for the faces: "
                       "its weights or config.json are not sound")
        else:
            row["prob"] = float(np.clip(prob, config.clip, 1 - config.clip))
            late = classified < len(order)
            row["status"] = "partial" if late else "ok"
            if late:
                row["message"] = (f"budget reached: {classified} of {len(order)} frames "
                                  "classified (anytime prediction)")
    except video.VideoError as exc:
        row.update(status="error", message=f"{exc.kind}: {exc}")
    except Exception as exc:  # noqa: BLE001 - one video's failure must not end the run
        row.update(status="error", message=f"{type(exc).__name__}: {exc}")
    row["seconds"] = time.perf_counter() - start
    return row


class VideoScorer:
    """What each actor holds: the face detector and the model, loaded once."""

    def __init__(self, model_dir: str, config: ScoreConfig, fallback: float,
                 faults: Faults = NO_FAULTS):
        from deepfake_lib.models.detector import load_model  # noqa: PLC0415

        device = "cuda" if config.actors.gpus > 0 else "cpu"
        self.config, self.fallback, self.faults = config, fallback, faults
        self.model = load_model(model_dir, device=device)
        # the faces the model was trained on: its detector, crop margin and size
        self.faces = faces.get_face_detector(self.model.config.face_detector, device)

    def ready(self) -> bool:
        return True

    def score(self, video_id: str, path: str) -> dict:
        self.faults.crash_once()
        self.faults.maybe_slow(video_id)
        return {"video_id": video_id, **score_video(path, self.faces, self.model, self.config,
                                                    self.fallback)}


def _label(value: str | None) -> int | None:
    return {"FAKE": 1, "REAL": 0}.get(value or "")


def score_inputs(run: RunDir, config: ScoreConfig) -> str:
    """A digest of what the stage reads: the model (``RUN/model`` unless another is given);
    scores of another model are other scores."""
    return model_digest(model_location(config.model or run.uri("model")))


def run_score(config: ScoreConfig, faults: Faults = NO_FAULTS) -> ScoreSummary:
    """Score every video under ``config.data``; write scores, submission and leaderboard.
    ``faults`` is for tests (:mod:`deepfake_lib.core.faults`)."""
    from deepfake_lib.models.detector import REFERENCE, load_model  # noqa: PLC0415

    start = time.monotonic()
    if config.aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {config.aggregation!r}")
    fallback = float(np.clip(config.fallback, config.clip, 1 - config.clip))
    run = RunDir(config.out)
    model_dir = model_location(config.model or run.uri("model"))
    # checked here, once: in the actors a model that cannot load only kills them, over and over
    load_model(model_dir, device="cpu")
    inputs = score_inputs(run, config)
    manifest = build_manifest(list(config.data), exclude=[config.out]).table
    if config.videos:
        missing = set(config.videos) - set(manifest.column("video_id").to_pylist())
        if missing:
            raise ValueError(f"{len(missing)} of the videos asked for are not under "
                             f"{', '.join(config.data)} (e.g. {sorted(missing)[0]})")
        manifest = manifest.filter(pc.is_in(manifest.column("video_id"),
                                            pa.array(config.videos, pa.string())))
    if manifest.num_rows == 0:
        raise ValueError(f"no video under {', '.join(config.data)}")
    manifest = manifest.sort_by([("part", "ascending"), ("video_id", "ascending")])
    planned = batches.plan(manifest, config.batch_size, group="part", content=("label",))
    check_stage(run, "score", config, inputs=inputs,
                locations=[*config.data, *([model_dir] if model_dir != REFERENCE else [])])
    videos = sum(rows.num_rows for _, rows in pending(run, "scores", planned, config.overwrite))
    actors = sized(config.actors, videos) if videos else None
    if actors is not None:
        check_resources("score actors (--actors, --cpus-per-actor, --gpus-per-actor)", actors)
    done = record_start(run, "score", config, inputs=inputs,
                        batches=BatchPlan(planned, "scores", ("scores",)))
    todo = [(n, rows.to_pylist()) for n, rows in planned if n not in done]
    progress = Progress("score", sum(len(r) for _, r in todo), every_s=config.progress_every_s)
    if todo:
        pool = ScorerPool(VideoScorer, (model_dir, replace(config, actors=actors), fallback,
                                        faults),
                          actors, config.budget_s + config.grace_s, config.start_timeout_s,
                          fallback)
        batch_of = {row["video_id"]: name for name, rows in todo for row in rows}
        results: dict[str, dict[str, dict]] = {name: {} for name, _ in todo}
        expected = {name: len(rows) for name, rows in todo}
        with closing(pool.run([row for _, rows in todo for row in rows])) as finished:
            for row, scored in finished:  # the actors are killed however this loop ends
                scored["label"] = _label(row["label"])
                name = batch_of[row["video_id"]]
                results[name][row["video_id"]] = scored
                progress.update(1, **{scored["status"]: 1})
                if len(results[name]) == expected[name]:
                    run.write_parquet(f"scores/{name}.parquet",
                                      pa.Table.from_pylist(list(results.pop(name).values()),
                                                           SCORE_SCHEMA))
    progress.close()

    rows = run.read_parquet("scores").to_pylist()
    run.write_bytes("submission.csv",
                    submission_csv(manifest.column("video_id").to_pylist(), rows, fallback))
    board = leaderboard(rows)
    if board is not None and config.data_name:
        board["data"] = config.data_name
    if board is not None:
        run.write_json("leaderboard.json", board)
        if (figure := roc_calibration_png(rows)) is not None:
            run.write_bytes("figures/roc_calibration.png", figure)
    summary = ScoreSummary(out=run.location, videos=len(rows),
                           statuses=dict(Counter(r["status"] for r in rows)), leaderboard=board,
                           seconds=time.monotonic() - start,
                           actors=actors.count if actors else None,
                           cpus_per_actor=actors.cpus if actors else None)
    record_finish(run, "score", config, summary, inputs)
    return summary
