import cv2
import numpy as np

from deepfake_lib import faces
from deepfake_lib.blend import MAX_GROW_FRACTION, hull_mask, self_blend
from deepfake_lib.sample import builtin_photos


def _face_and_landmarks():
    photo = builtin_photos()["astronaut"]
    box = faces.DlibDetector("hog").detect(photo)[0].box
    crop, inner = faces.crop_face_with_box(photo, box, margin=0.3, size=256)
    marks = faces.face_landmarks(crop, [inner])[0]
    return crop, np.array([p for f in marks.values() for p in f], np.float32)


def test_self_blend_mask_is_exact_and_bounded_by_the_landmarks():
    face, points = _face_and_landmarks()
    size = max(np.ptp(points[:, 0]), np.ptp(points[:, 1]))
    grow = int(MAX_GROW_FRACTION * size)
    hull = hull_mask(face.shape, points)
    bound = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 3,) * 2))
    for seed in range(5):
        fake, mask = self_blend(face, points, np.random.default_rng(seed))
        assert fake.shape == face.shape and mask.shape == face.shape[:2]
        assert mask.sum() > 0.5 * hull.sum()
        assert (mask & (1 - bound)).sum() == 0           # never outside the grown hull
        outside = mask == 0
        assert np.array_equal(fake[outside], face[outside])  # untouched where the mask is 0
        assert np.abs(fake[mask == 1].astype(int) - face[mask == 1]).mean() > 1


def test_self_blend_is_reproducible():
    face, points = _face_and_landmarks()
    a = self_blend(face, points, np.random.default_rng(3))
    b = self_blend(face, points, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
