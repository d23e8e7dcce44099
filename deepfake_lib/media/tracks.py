"""Face tracks: detect every ``detect_every_s`` seconds, link detections into one track per
person, and give every frame a box per person by interpolation.

Boxes are ``(top, right, bottom, left)`` floats in pixels of the upright frame. Detections
one second apart are linked by optimal assignment on a cost mixing the centres' distance
(relative to the face size) and the change of size; a person missed by the detector for up to
``max_missed`` detection frames keeps their track. Between two detections of a track the box
moves linearly; past its first and last detection it keeps its end velocity for at most one
detection interval (a person who entered or left the view is not invented in frames far from
where they were seen), clamped to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepfake_lib.media import video
from deepfake_lib.media.faces import Detection, FaceDetector


@dataclass
class Track:
    track_id: int
    frames: list[int]                 # frame indices with a detection, increasing
    boxes: list[tuple[float, ...]]    # detected boxes at those frames
    scores: list[float]

    @property
    def size(self) -> float:
        """Median face height in pixels."""
        return float(np.median([b[2] - b[0] for b in self.boxes]))


@dataclass
class FaceTracks:
    """The tracks of one video and what is needed to place them in its frames."""

    tracks: list[Track]
    frame_count: int
    height: int
    width: int
    interval: int                     # frames between detections

    def span(self, track: Track) -> tuple[int, int]:
        """First and last frame (inclusive) where ``track`` has a box."""
        return (max(0, track.frames[0] - self.interval),
                min(self.frame_count - 1, track.frames[-1] + self.interval))

    def box_at(self, track: Track, frame: int) -> tuple[float, float, float, float] | None:
        """The box of ``track`` at ``frame``, or None outside its span."""
        first, last = self.span(track)
        if not first <= frame <= last:
            return None
        f = np.asarray(track.frames, dtype=float)
        b = np.asarray(track.boxes, dtype=float)
        if len(f) == 1:
            box = b[0]
        elif frame <= f[0] or frame >= f[-1]:
            i = 0 if frame <= f[0] else len(f) - 2
            slope = (b[i + 1] - b[i]) / (f[i + 1] - f[i])
            anchor = 0 if frame <= f[0] else len(f) - 1
            box = b[anchor] + slope * (frame - f[anchor])
        else:
            box = np.array([np.interp(frame, f, b[:, k]) for k in range(4)])
        top, right, bottom, left = box
        return (float(np.clip(top, 0, self.height)), float(np.clip(right, 0, self.width)),
                float(np.clip(bottom, 0, self.height)), float(np.clip(left, 0, self.width)))

    def boxes_at(self, frame: int) -> list[tuple[int, tuple[float, float, float, float]]]:
        """``(track_id, box)`` of every track present at ``frame``."""
        out = []
        for track in self.tracks:
            box = self.box_at(track, frame)
            if box is not None and box[2] - box[0] >= 2 and box[1] - box[3] >= 2:
                out.append((track.track_id, box))
        return out


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(top, right, bottom, left)`` boxes."""
    top, bottom = max(a[0], b[0]), min(a[2], b[2])
    left, right = max(a[3], b[3]), min(a[1], b[1])
    inter = max(0.0, bottom - top) * max(0.0, right - left)
    area = lambda box: max(0.0, box[2] - box[0]) * max(0.0, box[1] - box[3])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def _link_cost(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Distance of centres in units of face size, plus the log change of size."""
    size_a, size_b = max(a[2] - a[0], 1.0), max(b[2] - b[0], 1.0)
    ca = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    cb = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    return float(np.linalg.norm(ca - cb) / max(size_a, size_b) + abs(np.log(size_b / size_a)))


def link(detections: dict[int, list[Detection]], max_cost: float = 1.5,
         max_missed: int = 2) -> list[Track]:
    """Link per-frame detections (``{frame: detections}``) into tracks; returns tracks with
    at least one detection, numbered by first appearance."""
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

    tracks: list[Track] = []
    missed: dict[int, int] = {}
    for frame in sorted(detections):
        found = detections[frame]
        live = [t for t in tracks if missed[t.track_id] <= max_missed]
        pairs: list[tuple[int, int]] = []
        if live and found:
            cost = np.array([[_link_cost(t.boxes[-1], d.box) for d in found] for t in live])
            rows, cols = linear_sum_assignment(cost)
            pairs = [(r, c) for r, c in zip(rows, cols) if cost[r, c] <= max_cost]
        used = set()
        for r, c in pairs:
            track = live[r]
            track.frames.append(frame)
            track.boxes.append(tuple(float(v) for v in found[c].box))
            track.scores.append(found[c].score)
            missed[track.track_id] = 0
            used.add(c)
        for track in live:
            if all(track is not live[r] for r, _ in pairs):
                missed[track.track_id] += 1
        for c, det in enumerate(found):
            if c not in used:
                track = Track(len(tracks), [frame], [tuple(float(v) for v in det.box)], [det.score])
                tracks.append(track)
                missed[track.track_id] = 0
    return tracks


def detect_frames(info: video.VideoInfo, detect_every_s: float) -> list[int]:
    """Frames on which to run the detector: one every ``detect_every_s`` seconds, and the
    last frame, so that the end of the video is interpolated rather than extrapolated."""
    frames = video.frame_indices_every(info, detect_every_s)
    if frames and frames[-1] != info.frame_count - 1:
        frames.append(info.frame_count - 1)
    return frames


def track_faces(path: str, detector: FaceDetector, detect_every_s: float = 1.0,
                frames: dict[int, np.ndarray] | None = None) -> FaceTracks:
    """Detect faces in ``path`` every ``detect_every_s`` seconds and link them into tracks.
    ``frames`` may hold already decoded frames (by index) to save decoding them again."""
    info = video.probe(path)
    wanted = detect_frames(info, detect_every_s)
    have = frames or {}
    missing = [i for i in wanted if i not in have]
    decoded = {**have, **(video.read_frames(path, missing) if missing else {})}
    detections = {i: detector.detect(decoded[i]) for i in wanted}
    interval = max(1, int(round(detect_every_s * (info.fps if info.fps > 0 else 25.0))))
    return FaceTracks(link(detections), info.frame_count, info.height, info.width, interval)
