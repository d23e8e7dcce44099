from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from deepfake_lib.media import blend, faces, masks, video

CROP = {"margin": 0.3, "size": 256}  # the prepare stage's crops


@pytest.fixture
def textured():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (200, 240, 3), dtype=np.uint8), (0, 0), 3)
    return cv2.normalize(base, None, 40, 200, cv2.NORM_MINMAX)


def _iou(mask, truth):
    return np.logical_and(mask, truth).sum() / np.logical_or(mask, truth).sum()


def _reencoded(frames, tmp_path, name, crf=23):
    """The RGB frames after a round trip through H.264 (yuv420p) at ``crf``."""
    path = str(tmp_path / f"{name}.mp4")
    h, w = frames[0].shape[:2]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "threads": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return [rgb for _, rgb in video.iter_frames(path)]


@pytest.fixture(scope="module")
def blended_clip(shared_data):
    """Four frames of a FaceForensics++ original, the same frames with the face self-blended
    (one random draw for all four), the face box, and the exact mask of the third frame."""
    frames = video.read_frames(str(shared_data / "videos" / "ffpp" / "519.mp4"), range(40, 44))
    reals = [frames[i] for i in sorted(frames)]
    box = faces.get_face_detector("mtcnn").detect(reals[0])[0].box
    top, right, bottom, left = faces.expand_box(box, 0.5, *reals[0].shape[:2])
    fakes = []
    for real in reals:
        marks = faces.face_landmarks(real, [box])[0]
        points = np.array([p for f in marks.values() for p in f], np.float32) - (left, top)
        region, _ = blend.self_blend(real[top:bottom, left:right], points, np.random.default_rng(0))
        fake = real.copy()
        fake[top:bottom, left:right] = region
        fakes.append(fake)
    changed = (cv2.absdiff(reals[2], fakes[2]).max(axis=2) > 2).astype(np.float32)
    exact = faces.crop_face_with_box(changed, box, **CROP)[0] >= 0.5
    return reals, fakes, box, exact


def test_self_blend_found_through_compression(blended_clip, tmp_path):
    """Both sides re-encoded at DFDC-like quality (H.264 CRF 23): the default mask of the
    prepare-style crops matches the exact mask (IoU >= 0.6; the previous default, a fixed
    threshold of 20 levels, got 0.23 here)."""
    reals, fakes, box, exact = blended_clip
    real = faces.crop_face_with_box(_reencoded(reals, tmp_path, "real")[2], box, **CROP)[0]
    fake = faces.crop_face_with_box(_reencoded(fakes, tmp_path, "fake")[2], box, **CROP)[0]
    mask = masks.diff_mask(real, fake)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert _iou(mask, exact) >= 0.6


@pytest.mark.parametrize("crf", [23, 28])
def test_real_crop_against_itself_reencoded_is_empty(blended_clip, tmp_path, crf):
    """An unswapped face (a real crop against the same crop one compression later) gives an
    almost empty mask."""
    reals, _, box, _ = blended_clip
    again = _reencoded(reals, tmp_path, "again", crf)
    for before, after in zip(reals, again):
        mask = masks.diff_mask(faces.crop_face_with_box(before, box, **CROP)[0],
                               faces.crop_face_with_box(after, box, **CROP)[0])
        assert mask.mean() < 0.005


def test_altered_square_is_found(textured):
    rng = np.random.default_rng(1)
    fake = textured.copy()
    patch = fake[60:130, 80:150].astype(int)
    fake[60:130, 80:150] = np.clip(patch[:, ::-1] + 30, 0, 255)  # mirrored and brighter
    noise = rng.integers(-3, 4, fake.shape)                       # compression-like noise
    fake = np.clip(fake.astype(int) + noise, 0, 255).astype(np.uint8)
    truth = np.zeros(fake.shape[:2], bool)
    truth[60:130, 80:150] = True
    assert _iou(masks.diff_mask(textured, fake), truth) > 0.8


def test_seed_rule_is_one_sided(textured):
    darker, brighter = textured.copy(), textured.copy()
    darker[60:130, 80:150] = np.clip(textured[60:130, 80:150].astype(int) - 30, 0, 255)
    brighter[60:130, 80:150] = np.clip(textured[60:130, 80:150].astype(int) + 30, 0, 255)
    truth = np.zeros(textured.shape[:2], bool)
    truth[60:130, 80:150] = True
    assert _iou(masks.diff_mask(textured, darker, "seed"), truth) > 0.95
    assert masks.diff_mask(textured, brighter, "seed").sum() == 0


@pytest.mark.parametrize("method", masks.METHODS)
def test_identical_images_give_an_empty_mask(textured, method):
    assert masks.diff_mask(textured, textured.copy(), method).sum() == 0


@pytest.mark.parametrize("shapes", [((4, 4, 3), (4, 5, 3)), ((4, 4), (4, 4)),
                                    ((4, 4, 4), (4, 4, 4)), ((4, 4, 3), (4, 4, 1))])
def test_bad_shapes(shapes):
    with pytest.raises(ValueError, match="aligned"):
        masks.diff_mask(np.zeros(shapes[0], np.uint8), np.zeros(shapes[1], np.uint8))


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown mask method"):
        masks.diff_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), "magic")
