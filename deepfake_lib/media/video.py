"""Reading videos (and photos, as one-frame videos) into RGB frames.

Conventions: frames are ``H x W x 3`` ``uint8`` arrays in **RGB** order, upright (container
rotation already applied), indexed from 0 in display order. Times are in seconds.

Exact frames (:func:`read_frames`, :func:`iter_frames`) come from OpenCV's FFmpeg backend:
on a 10-s 1080p DFDC clip it decodes all 300 frames as fast as PyAV (0.8 s with ``grab``,
1.2 s to RGB, on 2 cores) and its keyframe seek returns the same pixels as a sequential decode
(checked on every shared test video by the tests). Where any frame near the wanted one will do
(scoring), :func:`read_frames_near` uses PyAV, which can tell FFmpeg to skip the frames that
no other frame is predicted from.

Every failure to read raises :class:`VideoError`, whose ``kind`` says why: ``missing``,
``not_a_file``, ``permission``, ``empty``, ``not_video``, ``corrupt`` or ``truncated``.
"""

from __future__ import annotations

import bisect
import errno
import os
import posixpath
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
import cv2
import numpy as np

# A gap of more frames than this between two wanted frames is crossed by seeking (to the
# keyframe before the target, then decoding forward) instead of decoding every frame.
SEEK_GAP_FRAMES = 48
# The farthest a frame given by read_frames_near may be from the one asked for (encoders put
# a few B-frames between two reference frames: x264's default is at most 3).
NEAR_FRAMES = 8


VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})


def media_kind(name: str) -> str | None:
    """``"video"``, ``"image"`` or None, from the file name's extension."""
    ext = posixpath.splitext(name)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


class VideoError(Exception):
    """A file that cannot be read as a video; ``kind`` names the reason."""

    def __init__(self, path: str, kind: str, reason: str):
        super().__init__(f"{path}: {kind}: {reason}")
        self.path = path
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What a video's container says: frame count, frames per second, upright size in pixels
    and the rotation (degrees clockwise) applied to decoded frames to make them upright."""

    path: str
    frame_count: int
    fps: float
    width: int
    height: int
    rotation: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def _check_file(path: str) -> None:
    """Raise a typed error for things that are not a readable, non-empty file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoError(path, "missing", "no such file") from None
    except PermissionError as exc:
        raise VideoError(path, "permission", str(exc)) from None
    if not os.path.isfile(path):
        raise VideoError(path, "not_a_file", "is a directory or special file, not a file")
    if st.st_size == 0:
        raise VideoError(path, "empty", "zero bytes")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        kind = "permission" if exc.errno in (errno.EACCES, errno.EPERM) else "corrupt"
        raise VideoError(path, kind, str(exc)) from None
    if media_kind(path) == "video" and not _looks_like_video(head):
        raise VideoError(path, "not_video", "the file does not start like any video container")


def _looks_like_video(head: bytes) -> bool:
    """Magic numbers of the containers DFDC-like sets use (MP4/MOV, Matroska/WebM, AVI)."""
    return (_is_mp4(head) or head.startswith(b"\x1a\x45\xdf\xa3")
            or head.startswith(b"RIFF"))


def _is_mp4(head: bytes) -> bool:
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def _mp4_cut_short(path: str) -> bool:
    """True when the top-level MP4 boxes are well formed but the last one claims to reach past
    the end of the file: the file was cut short (an interrupted copy or download)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            head = f.read(16)
            box = struct.unpack(">I", head[:4])[0]
            if not head[4:8].isalpha():  # not a box type: damaged, not cut short
                return False
            if box == 1 and len(head) == 16:
                box = struct.unpack(">Q", head[8:16])[0]
            if box == 0:  # the last box runs to the end of the file
                return False
            if box < 8:
                return False
            offset += box
        return offset > size


def _stopped_early(path: str) -> str:
    """The kind of a video whose decoding stopped before a frame its container lists:
    ``corrupt`` for an MP4 whose boxes are all whole (its data is damaged), else
    ``truncated`` (an MP4 cut short; other containers are not walked, so a cut is assumed)."""
    with open(path, "rb") as f:
        head = f.read(16)
    return "corrupt" if _is_mp4(head) and not _mp4_cut_short(path) else "truncated"


def decode_threads() -> int:
    """FFmpeg decoding threads: the CPUs Ray gave this worker (it sets ``OMP_NUM_THREADS``),
    so that parallel workers do not fight over cores; 0 (FFmpeg's choice) elsewhere."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def _open(path: str) -> cv2.VideoCapture:
    _check_file(path)
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, decode_threads()])
    if not cap.isOpened():
        if _mp4_cut_short(path):
            raise VideoError(path, "truncated", "the file ends before its last MP4 box does")
        raise VideoError(path, "corrupt", "FFmpeg cannot open it (damaged header or unknown codec)")
    return cap


def _read_image(path: str) -> np.ndarray:
    _check_file(path)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoError(path, "corrupt", "cannot decode the image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def probe(path: str) -> VideoInfo:
    """Read the container's properties without decoding frames (a photo: 1 frame at 1 fps)."""
    if media_kind(path) == "image":
        h, w = _read_image(path).shape[:2]
        return VideoInfo(path, 1, 1.0, w, h, 0)
    cap = _open(path)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
    finally:
        cap.release()
    if count <= 0 or width <= 0 or height <= 0:
        raise VideoError(path, "corrupt", f"no video frames (count={count}, size={width}x{height})")
    return VideoInfo(path, count, fps, width, height, rotation)


def read_frames(path: str, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """Decode exactly the frames at ``indices`` (any order, duplicates allowed).

    Returns ``{index: RGB frame}``. Frames between wanted ones are skipped without colour
    conversion, and long gaps are crossed by seeking, so reading a few frames of a long video
    costs little more than decoding from the keyframes before them. Raises ``VideoError``
    (``truncated``) when a wanted frame lies past what the file really holds.
    """
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return {}
    if wanted[0] < 0:
        raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
    if media_kind(path) == "image":
        if wanted != [0]:
            raise VideoError(path, "truncated", f"a photo has only frame 0, asked for {wanted}")
        return {0: _read_image(path)}
    cap = _open(path)
    frames: dict[int, np.ndarray] = {}
    position = 0  # index of the frame the next grab() returns
    try:
        for index in wanted:
            if index - position > SEEK_GAP_FRAMES:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                # where the seek really landed: short of the target in a file cut short
                landed = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
                if landed > index:
                    raise VideoError(path, "corrupt",
                                     f"seeking to frame {index} overshot to {landed}")
                position = landed
            while position <= index:
                if not cap.grab():
                    kind = _stopped_early(path)
                    reason = (f"frame {position} cannot be decoded, though every MP4 box is "
                              "whole (damaged data)" if kind == "corrupt" else
                              f"decoding stopped at frame {position}, before frame {index}")
                    raise VideoError(path, kind, reason)
                position += 1
            ok, bgr = cap.retrieve()
            if not ok:
                raise VideoError(path, "corrupt", f"frame {index} could not be decoded")
            frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    return frames


def read_frames_near(path: str, indices: Iterable[int], info: VideoInfo | None = None
                     ) -> dict[int, np.ndarray]:
    """Like :func:`read_frames`, but each index gets the nearest frame (in display order, at
    most :data:`NEAR_FRAMES` away, earlier on a tie) among those some other frame is predicted
    from: FFmpeg skips the others (non-reference B-frames) without decoding them.

    Returns ``{index: RGB frame}`` for the indices asked for; two indices may share a frame.
    Frames are placed by their time stamps (index = seconds x fps). In DFDC's and FF++'s
    encodes every other frame is skipped and the frame given is the one asked for or the one
    before it. Where frames cannot be placed so (no frame rate or time stamps, a seek that
    fails, no decoded frame near one asked for though decoding went past it: a variable
    frame rate), this reads the exact frames with :func:`read_frames`. For scoring, where which
    of two neighbouring frames is classified does not matter; a fake compared with its
    original frame by frame needs :func:`read_frames`. Raises ``VideoError`` as it does.
    ``info``: the video's :func:`probe`, when the caller has it.
    """
    wanted = sorted({int(i) for i in indices})
    if not wanted or media_kind(path) == "image":
        return read_frames(path, wanted)
    if wanted[0] < 0:
        raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
    info = info or probe(path)  # the typed errors of a file that does not open; the rotation
    if info.fps <= 0:
        return read_frames(path, wanted)
    try:
        container = av.open(path)
    except av.FFmpegError as exc:
        raise VideoError(path, "corrupt", f"PyAV cannot open it: {exc}") from None
    try:
        return _read_near(path, container, info, wanted)
    except _NotPlaceable:
        return read_frames(path, wanted)
    finally:
        container.close()


class _NotPlaceable(Exception):
    """Decoded frames cannot be placed by their time stamps here."""


def _read_near(path: str, container, info: VideoInfo, wanted: list[int]
               ) -> dict[int, np.ndarray]:
    """:func:`read_frames_near` of the sorted ``wanted`` from the open ``container``."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.thread_count = decode_threads()
    stream.codec_context.skip_frame = "NONREF"
    keyframes = _keyframe_indices(stream, info.fps)
    decoded = _indexed_frames(container, stream, info.fps)
    # The first frame is decoded whatever is wanted: a seek made before any frame was decoded
    # gives grey-green frames on some streams (FF++ 519.mp4).
    previous, current = None, next(decoded, None)  # (index, av.VideoFrame): the last two
    frames: dict[int, np.ndarray] = {}
    rgb: dict[int, np.ndarray] = {}  # by decoded frame, for indices that share one
    for index in wanted:
        if current is not None and _worth_seeking(current[0], index, keyframes):
            try:  # to the keyframe at or before the target, then decoding forward
                container.seek(_pts_of(stream, index, info.fps), stream=stream)
            except av.FFmpegError:
                raise _NotPlaceable from None
            decoded = _indexed_frames(container, stream, info.fps)
            previous = current = None
        while current is None or current[0] < index:
            following = next(decoded, None)
            if following is None:
                break
            previous, current = current, following
        nearest = min((c for c in (previous, current) if c is not None),
                      key=lambda c: (abs(c[0] - index), c[0]), default=None)
        if nearest is None or abs(nearest[0] - index) > NEAR_FRAMES:
            if current is not None and current[0] >= index:
                raise _NotPlaceable  # decoding went past it: time stamps with gaps
            at = "no frame" if nearest is None else f"frame {nearest[0]}"
            raise VideoError(path, _stopped_early(path),
                             f"the nearest frame decoded to frame {index} is {at}")
        if nearest[0] not in rgb:
            rgb[nearest[0]] = _upright(nearest[1].to_ndarray(format="rgb24"), info.rotation)
        frames[index] = rgb[nearest[0]]
    return frames


def _pts_of(stream, index: int, fps: float) -> int:
    return (stream.start_time or 0) + round(index / fps / stream.time_base)


def _keyframe_indices(stream, fps: float) -> list[int] | None:
    """The frame indices of the keyframes the container's index lists (placed by decode
    time, a frame or two early), or None when it lists none."""
    start = stream.start_time or 0
    keys = [round(float((e.timestamp - start) * stream.time_base) * fps)
            for e in stream.index_entries if e.is_keyframe]
    return keys or None


def _worth_seeking(position: int, index: int, keyframes: list[int] | None) -> bool:
    """Whether to seek from frame ``position`` to frame ``index``: a long gap, and (when the
    keyframes are known) a keyframe after ``position`` to land on, else decoding forward
    costs no more than the seek would."""
    if index - position <= SEEK_GAP_FRAMES:
        return False
    if keyframes is None:
        return True
    before = bisect.bisect_right(keyframes, index)
    return before > 0 and keyframes[before - 1] > position


def _indexed_frames(container, stream, fps: float) -> Iterator[tuple[int, "av.VideoFrame"]]:
    """``(index, frame)`` as decoded from where ``container`` stands; the index from the
    frame's time stamp. Damaged data ends it, as the end of the file does."""
    start = stream.start_time or 0
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                raise _NotPlaceable
            yield round(float((frame.pts - start) * stream.time_base) * fps), frame
    except av.FFmpegError:
        return


def _upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """``frame`` turned ``rotation`` degrees clockwise (a multiple of 90), as OpenCV does."""
    return np.ascontiguousarray(np.rot90(frame, k=-(rotation // 90))) if rotation else frame


def iter_frames(path: str) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, RGB frame)`` for every frame, in order (a photo yields one)."""
    if media_kind(path) == "image":
        yield 0, _read_image(path)
        return
    cap = _open(path)
    try:
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise VideoError(path, "corrupt", "no frame could be decoded")


def frame_indices_every(info: VideoInfo, every_s: float, start_s: float = 0.0,
                        limit: int | None = None) -> list[int]:
    """Indices of one frame every ``every_s`` seconds from ``start_s``, inside the video."""
    if every_s <= 0:
        raise ValueError("every_s must be > 0")
    fps = info.fps if info.fps > 0 else 25.0
    out: list[int] = []
    t = start_s
    while True:
        index = int(round(t * fps))
        if index >= info.frame_count or (limit is not None and len(out) >= limit):
            return out
        if not out or index != out[-1]:
            out.append(index)
        t += every_s


def read_every(path: str, every_s: float, limit: int | None = None) -> dict[int, np.ndarray]:
    """Read one frame every ``every_s`` seconds (at most ``limit`` frames)."""
    return read_frames(path, frame_indices_every(probe(path), every_s, limit=limit))
