"""Predict: any videos (files, or folders of them, local or ``s3://``; no data layout needed)
scored as the score stage scores them, with a picture of where each was altered.

Each video goes through :func:`deepfake_lib.stages.score.score_video` on a pool of Ray actors
(:class:`deepfake_lib.execution.actor_pool.ScorerPool`) that load the model (:func:`load_model`) and
its face detector once: the same budget, frames, aggregation, fallback and statuses as the
score stage. The actor then draws the video's picture (:func:`picture`): a strip of up to
``strip`` of the classified frames, each face's box coloured by its probability (green real,
red fake) and the detector's mask of altered pixels (the U-Net decoder's output, which
scoring skips) as a heat overlay, the face crops enlarged below, titled with the video's
probability. Writes::

    OUT/predictions.csv     path, prob, status, message, seconds, n_faces, n_tracks,
                            n_frames, picture: one row per video, in the order given
    OUT/<file name>.png     the picture of each video with frames (not of an error)

A path that is missing, a folder without videos, a file whose name is not a video's or
image's, or a file that cannot be read as one is a row with status ``error`` and a message
that begins with its kind (``missing``, ``no_video``, ``not_video``, ``empty``,
``truncated``, ``corrupt``, ...), never a traceback.
"""

from __future__ import annotations

import csv
import io
import posixpath
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow.fs as pafs

from deepfake_lib.core import storage
from deepfake_lib.core.checks import at_least, location, validate
from deepfake_lib.core.progress import format_seconds
from deepfake_lib.core.storage import RunDir
from deepfake_lib.data.dataset import build_manifest
from deepfake_lib.execution.actor_pool import ScorerPool, sized
from deepfake_lib.execution.connect import init_ray
from deepfake_lib.execution.resources import check_locations, check_resources
from deepfake_lib.media import faces
from deepfake_lib.media.pictures import picture, title_of
from deepfake_lib.media.video import media_kind
from deepfake_lib.stages.score import ScoreConfig, VideoScorer, score_video

COLUMNS = ("path", "prob", "status", "message", "seconds", "n_faces", "n_tracks", "n_frames",
           "picture")
SCORED = ("ok", "partial")  # statuses whose probability comes from the model
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MAX_NAME_BYTES = 240        # of a picture's name before its "-2" and ".png": 255 at most


@dataclass(frozen=True)
class PredictConfig:
    paths: tuple[str, ...] = field(metadata=location(many=True))
    # a model folder, or the detector shipped with the package
    model: str = field(default="reference", metadata=location())
    out: str = field(default="predictions", metadata=location())
    # classified frames shown in each picture
    strip: int = field(default=6, metadata=at_least(1))
    # budget, frames, aggregation, fallback, actors, ... (default: the score stage's)
    score: ScoreConfig | None = None

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class PredictSummary:
    out: str
    videos: int = 0
    scored: int = 0                   # videos with status ok or partial
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        """Some video was scored by the model (not only given the fallback)."""
        return self.scored > 0

    def text(self) -> str:
        statuses = ", ".join(f"{n} {k}" for k, n in sorted(self.statuses.items()))
        return (f"predict: {self.videos} videos ({statuses}) in {format_seconds(self.seconds)}; "
                f"predictions in {storage.join(self.out, 'predictions.csv')}, pictures beside it")


def find_videos(paths: tuple[str, ...] | list[str], exclude: tuple[str, ...] = ()
                ) -> list[tuple[str, str]]:
    """``(path, problem)`` for every video named by ``paths`` (files, or folders searched
    recursively, never into ``exclude``: predict's own output), in order; ``problem`` is
    empty, or the message of an error row."""
    found: list[tuple[str, str]] = []
    for path in paths:
        fs, where = storage.resolve(path)
        try:
            kind = fs.get_file_info(where).type
        except OSError as exc:
            found.append((path, f"unreadable: {exc}"))
            continue
        if kind == pafs.FileType.NotFound:
            found.append((path, "missing: no such file or folder"))
        elif kind == pafs.FileType.Directory:
            rows = build_manifest(path, exclude=exclude).table.to_pylist()
            found += [(r["path"], "" if r["exists"] else "missing: the file is not there")
                      for r in rows]
            if not rows:
                found.append((path, "no_video: no video or image file in this folder"))
        elif media_kind(path) is None:
            ext = posixpath.splitext(path)[1] or "no extension"
            found.append((path, f"not_video: {ext} is not the name of a video or image file"))
        else:
            found.append((path, ""))
    return found


def picture_names(paths: list[str]) -> list[str]:
    """A PNG file name per path, from its file name (cut to :data:`MAX_NAME_BYTES` bytes:
    file systems refuse names over 255), made unique with ``-2``, ``-3``, ..."""
    names, seen = [], Counter()
    for path in paths:
        base = posixpath.basename(path.rstrip("/")) or "video"
        base = base.encode()[:MAX_NAME_BYTES].decode(errors="ignore")
        if base[:1] in FORMULA_STARTS:  # a name a spreadsheet would run as a formula
            base = "_" + base[1:]
        seen[base] += 1
        names.append(f"{base}.png" if seen[base] == 1 else f"{base}-{seen[base]}.png")
    return names


def predict_video(path: str, detector: faces.FaceDetector, model, config: ScoreConfig,
                  fallback: float, strip: int = 6) -> dict:
    """:func:`score_video`'s row, with ``picture`` (PNG bytes, or None when no frame was
    read) and ``picture_s``; ``seconds`` counts both. Never raises."""
    start = time.perf_counter()
    kept: dict = {}
    row = score_video(path, detector, model, config, fallback, keep=kept)
    row.pop("track_probs", None)
    row["picture"] = None
    t = time.perf_counter()
    if kept:
        try:
            row["picture"] = picture(kept["frames"], kept["tracks"], model,
                                     title_of(posixpath.basename(path), row["prob"],
                                              row["status"]), strip, config.max_tracks)
        except Exception as exc:  # noqa: BLE001 - the prediction stands without its picture
            row["message"] = (row["message"] + "; " if row["message"] else "") + \
                f"no picture: {type(exc).__name__}: {exc}"
    row["picture_s"] = time.perf_counter() - t
    row["seconds"] = time.perf_counter() - start
    return row


class Predictor(VideoScorer):
    """A scoring actor that also draws each video's picture."""

    def __init__(self, model_dir: str, config: ScoreConfig, fallback: float, strip: int):
        super().__init__(model_dir, config, fallback)
        self.strip = strip

    def score(self, video_id: str, path: str) -> dict:
        return {"video_id": video_id, **predict_video(path, self.faces, self.model, self.config,
                                                      self.fallback, self.strip)}


def line(row: dict) -> str:
    """One video, for people: probability, status, seconds, path (and why, when not ok)."""
    text = f"{row['prob']:.3f}  {row['status']:<8} {row['seconds']:6.2f} s  {row['path']}"
    return text + (f"  ({row['message']})" if row["message"] else "")


def as_text_cell(value: object) -> object:
    """``value``, with a leading ``'`` where a spreadsheet would take the text for a formula
    (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return)."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def predictions_csv(rows: list[dict]) -> bytes:
    """The CSV of ``rows``; text cells that a spreadsheet would run as formulas are quoted
    with a leading ``'`` (:func:`as_text_cell`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", quoting=csv.QUOTE_MINIMAL,
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: as_text_cell(v) for k, v in row.items()},
                         "prob": f"{row['prob']:.6f}", "seconds": f"{row['seconds']:.3f}"})
    return buf.getvalue().encode()


def run_predict(config: PredictConfig, log: Callable[[str], None] = print) -> PredictSummary:
    """Predict every video named by ``config.paths``; log one line per video as it is done;
    write the pictures and ``predictions.csv`` into ``config.out``."""
    from deepfake_lib.models.detector import REFERENCE, load_model, model_location  # noqa: PLC0415

    start = time.monotonic()
    score = config.score or ScoreConfig(data=config.paths, out=config.out, model=config.model)
    model_dir = model_location(config.model)
    # checked here, once: in the actors a model that cannot load only kills them, over and over
    load_model(model_dir, device="cpu")
    fallback = float(np.clip(score.fallback, score.clip, 1 - score.clip))
    found = find_videos(config.paths, exclude=(config.out,))
    names = picture_names([path for path, _ in found])
    out = RunDir(config.out)
    rows: dict[int, dict] = {}
    for n, (path, problem) in enumerate(found):
        if problem:
            rows[n] = {"path": path, "prob": fallback, "status": "error", "message": problem,
                       "seconds": 0.0, "n_faces": 0, "n_tracks": 0, "n_frames": 0, "picture": ""}
            log(line(rows[n]))
    todo = [{"video_id": str(n), "path": path} for n, (path, problem) in enumerate(found)
            if not problem]
    if todo:
        init_ray()
        # the actors read the model and the videos; the driver writes every output
        check_locations([*([model_dir] if model_dir != REFERENCE else []),
                         *(v["path"] for v in todo)], score.shared_fs)
        actors = sized(score.actors, len(todo))
        check_resources("predict actors (--actors, --cpus-per-actor, --gpus-per-actor)", actors)
        score = replace(score, actors=actors)
        pool = ScorerPool(Predictor, (model_dir, score, fallback, config.strip), actors,
                          score.budget_s + score.grace_s, score.start_timeout_s, fallback)
        for video, scored in pool.run(todo):
            n = int(video["video_id"])
            image = scored.pop("picture", None)
            rows[n] = {**scored, "path": video["path"], "picture": names[n] if image else ""}
            if image:
                try:
                    out.write_bytes(names[n], image)
                except OSError as exc:  # this picture only: the other results stand
                    rows[n]["picture"] = ""
                    rows[n]["message"] = "; ".join(
                        m for m in (rows[n].get("message"), f"picture: {exc}") if m)
            log(line(rows[n]))
    ordered = [rows[n] for n in range(len(found))]
    out.write_bytes("predictions.csv", predictions_csv(ordered))
    statuses = Counter(r["status"] for r in ordered)
    return PredictSummary(out=out.location, videos=len(ordered),
                          scored=sum(statuses[s] for s in SCORED), statuses=dict(statuses),
                          seconds=time.monotonic() - start)
