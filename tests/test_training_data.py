import numpy as np
import pyarrow.parquet as pq
import pytest

from deepfake_lib import faces, metrics, training_data
from deepfake_lib.sample import builtin_photos
from deepfake_lib.storage import RunDir
from deepfake_lib.training_data import BLEND, PAIR, REAL, Crops


def test_epoch_plan_pairs_every_real_with_a_pseudo_fake_and_balances_the_pairs():
    kinds = np.array(["real"] * 10 + ["photo"] * 6 + ["pair"] * 30, dtype=object)
    whole = training_data.epoch_items(kinds, epoch=3, seed=0, rank=0, world=1)
    modes = whole[:, 1]
    reals = np.flatnonzero(kinds != "pair")
    # each real face is there as itself and, right after it, as a pseudo-fake
    blends = np.flatnonzero(modes == BLEND)
    assert sorted(whole[blends, 0].tolist()) == reals.tolist()
    assert all(whole[b - 1, 1] == REAL and whole[b - 1, 0] == whole[b, 0] for b in blends)
    # every pair's fake, each with a real face: as many fakes as reals
    assert sorted(whole[modes == PAIR, 0].tolist()) == list(range(16, 46))
    labels = (modes != REAL).astype(int)
    assert labels.sum() * 2 == len(labels)
    ranks = [training_data.epoch_items(kinds, 3, 0, r, 3) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) % 2 == 0
    assert not np.array_equal(whole, training_data.epoch_items(kinds, 4, 0, 0, 1))


@pytest.fixture(scope="module")
def two_crops() -> Crops:
    images, boxes, marks = [], [], []
    for photo in builtin_photos().values():
        box = faces.DlibDetector("hog").detect(photo)[0].box
        crop, inner = faces.crop_face_with_box(photo, box, margin=0.3, size=256)
        points = faces.face_landmarks(crop, [inner])[0]
        images.append(crop)
        boxes.append(inner)
        marks.append(np.array([p for f in points.values() for p in f], np.float32))
    return Crops(np.stack(images), np.zeros((2, 256, 256), np.uint8), np.array(boxes), marks)


def test_pseudo_fakes_are_new_each_draw_and_their_masks_follow_the_crop(two_crops):
    items = [(0, REAL), (0, BLEND), (1, REAL), (1, BLEND)]
    labels = np.zeros(2)
    a = training_data.training_batch(two_crops, items, labels, 128, 0.15, 0.5, None,
                                     np.random.default_rng(0))
    b = training_data.training_batch(two_crops, items, labels, 128, 0.15, 0.5, None,
                                     np.random.default_rng(1))
    images, masks, ys = a
    assert ys.tolist() == [0, 1, 0, 1]
    assert all(i.shape == (128, 128, 3) for i in images) and masks.shape == (4, 128, 128)
    assert masks[[0, 2]].sum() == 0 and all(masks[k].mean() > 0.1 for k in (1, 3))
    assert not np.array_equal(images[1], b[0][1])  # a fresh pseudo-fake each draw


def test_recrop_frames_the_face_at_the_margin():
    image = np.zeros((256, 256, 3), np.uint8)
    image[100:150, 80:130] = 255                      # the "face": box 100, 130, 150, 80
    box = np.array([100, 130, 150, 80])
    tight, _ = training_data.recrop(image, image[..., 0], box, 0.0, 50)
    assert tight.mean() > 250                         # margin 0: all face
    loose, _ = training_data.recrop(image, image[..., 0], box, 0.5, 100)
    assert abs((loose[..., 0] > 128).mean() - 0.25) < 0.02  # a face of half the side


def test_temperature_scaling_lowers_the_log_loss_of_overconfident_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    z = (y * 2 - 1) * 1.0 + rng.normal(0, 1.5, 400)   # informative but noisy
    over = z * 6                                      # the same ranking, overconfident
    t = metrics.fit_temperature(y, over)
    assert 3 < t < 12
    before = metrics.log_loss(y, 1 / (1 + np.exp(-over)))
    after = metrics.log_loss(y, 1 / (1 + np.exp(-over / t)))
    assert after < 0.6 * before and after < 0.6
    assert metrics.fit_temperature(np.ones(5), over[:5]) == 1.0


@pytest.mark.ray
def test_validation_holds_real_faces_and_real_fakes_only(ffpp_crops, shared_data):
    config, _ = ffpp_crops
    run = RunDir(config.out)
    index = training_data.crop_index(run)
    dev = shared_data / "crops" / "dfdc_dev"
    sets = training_data.validation_sets(run, index, (str(dev),), 0.15, 96)
    val, folder = sets
    rows = [r for r in pq.read_table(f"{config.out}/crops").to_pylist() if r["split"] == "val"]
    assert sorted(val.videos) == sorted(r["video_id"] for r in rows)
    kinds = {r["video_id"]: r["kind"] for r in rows}
    # fakes are real deepfakes (pairs), reals are real videos; the video's label is the label
    assert all((kinds[v] == "pair") == (y == 1) for v, y in zip(val.videos, val.labels))
    assert np.array_equal(val.labels, val.video_labels)
    assert folder.labels.tolist() == [0] * 34 + [1] * 33
    assert all(i.shape == (96, 96, 3) for i in val.images + folder.images)
