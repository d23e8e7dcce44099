import cv2
import numpy as np
import pytest

from deepfake_lib import faces, masks, video


@pytest.fixture
def textured():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (200, 240, 3), dtype=np.uint8), (0, 0), 3)
    return cv2.normalize(base, None, 40, 200, cv2.NORM_MINMAX)


def _square_iou(mask, top=60, left=80, size=70):
    truth = np.zeros_like(mask)
    truth[top:top + size, left:left + size] = 1
    return (mask & truth).sum() / (mask | truth).sum()


@pytest.mark.parametrize("method", ["absdiff", "ssim"])
def test_altered_square_is_found(textured, method):
    rng = np.random.default_rng(1)
    fake = textured.copy()
    patch = fake[60:130, 80:150].astype(int)
    fake[60:130, 80:150] = np.clip(patch[:, ::-1] + 30, 0, 255)  # mirrored and brighter
    noise = rng.integers(-3, 4, fake.shape)                       # compression-like noise
    fake = np.clip(fake.astype(int) + noise, 0, 255).astype(np.uint8)
    mask = masks.diff_mask(textured, fake, method)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert _square_iou(mask) > 0.8


def test_seed_rule_is_one_sided(textured):
    darker, brighter = textured.copy(), textured.copy()
    darker[60:130, 80:150] = np.clip(textured[60:130, 80:150].astype(int) - 30, 0, 255)
    brighter[60:130, 80:150] = np.clip(textured[60:130, 80:150].astype(int) + 30, 0, 255)
    assert _square_iou(masks.diff_mask(textured, darker, "seed")) > 0.95
    assert masks.diff_mask(textured, brighter, "seed").sum() == 0


@pytest.mark.parametrize("method", masks.METHODS)
def test_identical_images_give_an_empty_mask(textured, method):
    assert masks.diff_mask(textured, textured.copy(), method).sum() == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="aligned"):
        masks.diff_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown mask method"):
        masks.diff_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), "magic")


def test_ffpp_masks_sit_on_the_face(shared_data):
    """Over the three FF++ pairs (Deepfakes, FaceSwap, NeuralTextures), at least 90% of the
    default mask's pixels lie in the face box with its margin, and each pair's mask marks
    part of the face."""
    folder = shared_data / "videos" / "ffpp"
    inside = total = 0
    for fake in ("004_982.mp4", "519_515.mp4", "634_660.mp4"):
        original = fake.split("_")[0] + ".mp4"
        real = video.read_frames(str(folder / original), [50])[50]
        forged = video.read_frames(str(folder / fake), [50])[50]
        box = faces.get_detector("mtcnn").detect(real)[0].box
        top, right, bottom, left = faces.expand_box(box, 0.3, *real.shape[:2])
        mask = masks.diff_mask(real, forged)
        in_box = int(mask[top:bottom, left:right].sum())
        assert in_box > 500, fake
        inside, total = inside + in_box, total + int(mask.sum())
    assert inside / total >= 0.9
