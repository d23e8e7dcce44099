import numpy as np
import pytest

from deepfake_lib.media import faces
from deepfake_lib.media.faces import Detection
from deepfake_lib.media.tracks import FaceTracks, iou, link, track_faces


def _det(top, left, size=40):
    return Detection((top, left + size, top + size, left), 1.0)


def test_link_follows_two_people_through_a_missed_detection_and_a_newcomer():
    detections = {
        0: [_det(10, 10), _det(10, 200)],
        30: [_det(12, 20), _det(10, 190)],
        60: [_det(14, 180)],                      # person 0 missed once
        90: [_det(16, 40), _det(10, 170), _det(100, 100)],  # someone enters
    }
    tracks = link(detections)
    assert [t.frames for t in tracks] == [[0, 30, 90], [0, 30, 60, 90], [90]]
    assert tracks[0].boxes[-1] == (16, 80, 56, 40)


def test_interpolation_extrapolation_and_span():
    tracks = link({0: [_det(0, 0)], 10: [_det(0, 20)], 20: [_det(0, 40)]})
    ft = FaceTracks(tracks, frame_count=100, height=100, width=70, interval=10)
    track = tracks[0]
    assert ft.box_at(track, 5) == (0, 50, 40, 10)            # halfway between detections
    assert ft.box_at(track, 25) == (0, 70, 40, 50)           # extrapolated, clamped to width 70
    assert ft.box_at(track, 31) is None                      # more than one interval past
    assert [tid for tid, _ in ft.boxes_at(15)] == [0]


def test_iou():
    assert iou((0, 10, 10, 0), (0, 10, 10, 0)) == 1.0
    assert iou((0, 10, 10, 0), (0, 20, 10, 10)) == 0.0
    assert iou((0, 10, 10, 0), (0, 15, 10, 5)) == pytest.approx(1 / 3)


def test_dfdc_video_has_one_continuous_track(shared_data):
    path = str(shared_data / "videos" / "dfdc" / "lynaeydofd.mp4")
    ft = track_faces(path, faces.get_face_detector("mtcnn"))
    main = max(ft.tracks, key=lambda t: len(t.frames))
    assert len(main.frames) == 11  # 10 detections one second apart, and the last frame
    boxes = np.array([ft.box_at(main, f) for f in range(ft.frame_count)])
    assert boxes.shape == (300, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= ft.height).all()
    assert (boxes[:, 3] >= 0).all() and (boxes[:, 1] <= ft.width).all()
    steps = np.abs(np.diff(boxes, axis=0)).max(axis=1)
    assert steps.max() < 0.05 * main.size  # no jumps from frame to frame


def test_crowd_video_tracks_several_people(shared_data):
    path = str(shared_data / "videos" / "clips" / "multi_person_1080p.mp4")
    ft = track_faces(path, faces.get_face_detector("auto"))
    long_tracks = [t for t in ft.tracks if len(t.frames) >= 3]
    assert len(long_tracks) >= 4
    for frame in (0, 52, 104):
        present = ft.boxes_at(frame)
        assert len(present) >= 4
        for _, (top, right, bottom, left) in present:
            assert 0 <= top < bottom <= ft.height and 0 <= left < right <= ft.width
