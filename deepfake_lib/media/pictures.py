"""The picture of a scored video: a strip of its frames, each face boxed and coloured by the
detector's probability, the detector's mask of altered pixels over it as heat, and the face
crops enlarged below. Images are RGB ``uint8`` arrays; boxes are ``(top, right, bottom,
left)`` in pixels."""

from __future__ import annotations

import cv2
import numpy as np

from deepfake_lib.media import faces, video
from deepfake_lib.media.figures import png_bytes
from deepfake_lib.media.tracks import FaceTracks, link

FRAME_PX = 200              # height of a frame in a picture
FACE_PX = 160               # side of an enlarged face crop below it
TITLE_PX = 56


def strip_frames(frames: list[int], count: int) -> list[int]:
    """Up to ``count`` of ``frames`` (sorted), spread evenly from the first to the last."""
    frames = sorted(frames)
    if len(frames) <= count:
        return frames
    return [frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, count)]


def _heat(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` (RGB) with ``mask`` (same size, [0, 1]) over it as heat: transparent where
    0, red-hot where 1."""
    heat = cv2.cvtColor(cv2.applyColorMap((mask * 255).astype(np.uint8), cv2.COLORMAP_JET),
                        cv2.COLOR_BGR2RGB)
    alpha = 0.65 * mask[..., None]
    return (image * (1 - alpha) + heat * alpha).astype(np.uint8)


def _colour(prob: float) -> tuple[int, int, int]:
    """Green for real (0), red for fake (1)."""
    return int(255 * prob), int(200 * (1 - prob)), 0


def _tile(frame: np.ndarray, index: int, faces_found: list[tuple], max_faces: int) -> np.ndarray:
    """One frame of the strip, ``FRAME_PX`` high, with its faces (``(region, box, crop,
    prob, mask)``: heat over the region, a box coloured by the probability) and the crops
    enlarged below."""
    shown = frame.copy()
    for (top, right, bottom, left), _, _, _, mask in faces_found:
        mask = cv2.resize(mask, (right - left, bottom - top))
        shown[top:bottom, left:right] = _heat(shown[top:bottom, left:right], mask)
    scale = FRAME_PX / frame.shape[0]
    frame_px = max(1, int(round(frame.shape[1] * scale)))
    width = max(FACE_PX, frame_px)
    tile = np.full((FRAME_PX + FACE_PX + 4, width, 3), 255, np.uint8)
    tile[:FRAME_PX, :frame_px] = cv2.resize(shown, (frame_px, FRAME_PX),
                                            interpolation=cv2.INTER_AREA)
    cv2.putText(tile, f"frame {index}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255),
                1, cv2.LINE_AA)
    side = min(FACE_PX, width // max(1, max_faces))
    for k, (_, box, crop, prob, mask) in enumerate(faces_found):
        top, right, bottom, left = (int(round(v * scale)) for v in box)
        cv2.rectangle(tile, (left, top), (right, bottom), _colour(prob), 2)
        cv2.putText(tile, f"{prob:.2f}", (left, max(10, top - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, _colour(prob), 1, cv2.LINE_AA)
        face = cv2.resize(_heat(crop, mask), (side, side), interpolation=cv2.INTER_AREA)
        tile[FRAME_PX + 4:FRAME_PX + 4 + side, k * side:(k + 1) * side] = face
    return tile


def picture(frames: dict[int, np.ndarray], tracks: FaceTracks, model, title: str,
            strip: int = 6, max_tracks: int = 4) -> bytes:
    """The PNG of a video: up to ``strip`` of ``frames`` (classified frames by index, as
    :func:`deepfake_lib.stages.score.score_video` keeps them) side by side under ``title``,
    each with the faces of ``tracks`` there (the ``max_tracks`` largest, as scoring takes
    them) and the model's (``model.predict_with_masks(crops)``, as
    :class:`deepfake_lib.models.detector.TrainedModel` has it) probability and mask of
    altered pixels of each."""
    seen = model.config
    chosen = strip_frames(list(frames), strip)
    found: dict[int, list[tuple]] = {}
    crops = []
    for index in chosen:
        frame = frames[index]
        present = sorted(tracks.boxes_at(index), key=lambda tb: tb[1][0] - tb[1][2])
        for _, box in present[:max_tracks]:
            crop, _ = faces.crop_face_with_box(frame, box, seen.crop_margin, seen.image_size)
            region = faces.expand_box(faces.clip_box(box, *frame.shape[:2]), seen.crop_margin,
                                      *frame.shape[:2])
            found.setdefault(index, []).append((region, box, crop))
            crops.append(crop)
    probs, masks = model.predict_with_masks(crops)
    at = 0
    for index in chosen:
        faces_here = found.get(index, [])
        found[index] = [(*f, float(probs[at + k]), masks[at + k]) for k, f in enumerate(faces_here)]
        at += len(faces_here)
    most = max([len(v) for v in found.values()] + [1])
    tiles = [_tile(frames[i], i, found[i], most) for i in chosen]
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8) if tiles else None
    body = np.concatenate([part for t in tiles for part in (t, gap)][:-1], axis=1) if tiles \
        else np.full((FRAME_PX, 400, 3), 255, np.uint8)
    head = np.full((TITLE_PX, body.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title, (6, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(head, "box: face probability (green real, red fake); heat: the detector's mask "
                "of altered pixels", (6, 46), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (80, 80, 80), 1,
                cv2.LINE_AA)
    return png_bytes(np.concatenate([head, body]))


def sample_frames(path: str, detector: faces.FaceDetector, count: int
                  ) -> tuple[dict[int, np.ndarray], FaceTracks]:
    """``count`` frames spread over the local video ``path`` and the faces found on each (one
    detection a frame, no boxes between): what :func:`picture` needs, for a fraction of what
    scoring costs. Raises :class:`deepfake_lib.media.video.VideoError`."""
    info = video.probe(path)
    chosen = strip_frames(list(range(info.frame_count)), count)
    frames = video.read_frames_near(path, chosen, info)
    found = link({i: detector.detect(frame) for i, frame in frames.items()})
    return frames, FaceTracks(found, info.frame_count, info.height, info.width, interval=1)


def title_of(name: str, prob: float, status: str) -> str:
    return f"{name}: P(fake) {prob:.2f} ({status})"
