import cv2
import numpy as np
import pytest

from deepfake_lib.data.sample import builtin_photos
from deepfake_lib.media import faces
from deepfake_lib.media.blend import (
    MAX_GROW_FRACTION,
    hull_mask,
    self_blend,
    xray_blend,
)


def _face_and_landmarks(name: str):
    photo = builtin_photos()[name]
    box = faces.DlibDetector("hog").detect(photo)[0].box
    crop, inner = faces.crop_face_with_box(photo, box, margin=0.3, size=256)
    marks = faces.face_landmarks(crop, [inner])[0]
    return crop, np.array([p for f in marks.values() for p in f], np.float32)


@pytest.fixture(scope="module")
def two_faces():
    return _face_and_landmarks("astronaut"), _face_and_landmarks("grace_hopper")


def _assert_exact_and_bounded(face, points, fake, mask):
    size = max(np.ptp(points[:, 0]), np.ptp(points[:, 1]))
    grow = int(MAX_GROW_FRACTION * size)
    hull = hull_mask(face.shape, points)
    bound = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 3,) * 2))
    assert fake.shape == face.shape and mask.shape == face.shape[:2]
    assert mask.sum() > 0.5 * hull.sum()
    assert (mask & (1 - bound)).sum() == 0            # never outside the grown hull
    outside = mask == 0
    assert np.array_equal(fake[outside], face[outside])  # untouched where the mask is 0
    changed = np.abs(fake.astype(int) - face).max(axis=2) > 0
    # the mask covers exactly the changed pixels (a blended pixel may round to its old value)
    assert (changed & ~mask.astype(bool)).sum() == 0
    assert changed[mask == 1].mean() > 0.8
    assert np.abs(fake[mask == 1].astype(int) - face[mask == 1]).mean() > 1


def test_self_blend_mask_is_exact_and_bounded_by_the_landmarks(two_faces):
    (face, points), _ = two_faces
    for seed in range(6):
        _assert_exact_and_bounded(face, points, *self_blend(face, points,
                                                            np.random.default_rng(seed)))


def test_xray_blend_brings_in_the_other_face_with_an_exact_mask(two_faces):
    (face, points), (donor, donor_points) = two_faces
    for seed in range(6):
        fake, mask = xray_blend(face, points, donor, donor_points, np.random.default_rng(seed))
        _assert_exact_and_bounded(face, points, fake, mask)
    # inside the mask the pseudo-fake is the other person: the face encodes closer to the donor
    fake, mask = xray_blend(face, points, donor, donor_points, np.random.default_rng(1))
    box = faces.DlibDetector("hog").detect(fake)[0].box
    enc = {k: faces.encode_faces(img, [box])[0] for k, img in
           (("fake", fake), ("face", face))}
    donor_box = faces.DlibDetector("hog").detect(donor)[0].box
    enc["donor"] = faces.encode_faces(donor, [donor_box])[0]
    assert np.linalg.norm(enc["fake"] - enc["donor"]) < np.linalg.norm(enc["fake"] - enc["face"])


def test_blends_are_reproducible_and_differ_per_draw(two_faces):
    (face, points), _ = two_faces
    a = self_blend(face, points, np.random.default_rng(3))
    b = self_blend(face, points, np.random.default_rng(3))
    c = self_blend(face, points, np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
