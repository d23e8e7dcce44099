import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfake_lib.core.storage import RunDir
from deepfake_lib.data import training_data
from deepfake_lib.data.sample import builtin_photos
from deepfake_lib.data.training_data import BLEND, PAIR, REAL, Crops
from deepfake_lib.media import faces, figures
from deepfake_lib.models import metrics


def _items(windows):
    return np.concatenate([w for mine in windows for w in mine])


def test_epoch_plan_pairs_every_real_with_a_pseudo_fake_and_balances_the_pairs():
    fakes = np.array([False] * 16 + [True] * 30)  # reals and photos, then pairs' fakes
    blocks = np.arange(46) // 8  # row groups of 8 crops
    whole = _items(training_data.epoch_windows(fakes, blocks, epoch=3, seed=0, world=1))
    modes = whole[:, 1]
    reals = np.flatnonzero(~fakes)
    # each real face is there as itself and, right after it, as a pseudo-fake
    blends = np.flatnonzero(modes == BLEND)
    assert sorted(whole[blends, 0].tolist()) == reals.tolist()
    assert all(whole[b - 1, 1] == REAL and whole[b - 1, 0] == whole[b, 0] for b in blends)
    # every pair's fake, each with a real face: as many fakes as reals
    assert sorted(whole[modes == PAIR, 0].tolist()) == list(range(16, 46))
    labels = (modes != REAL).astype(int)
    assert labels.sum() * 2 == len(labels)
    again = _items(training_data.epoch_windows(fakes, blocks, epoch=4, seed=0, world=1))
    assert not np.array_equal(whole, again)


def test_blend_share_sets_how_many_real_faces_come_with_a_pseudo_fake():
    fakes = np.array([False] * 400 + [True] * 100)
    blocks = np.arange(500) // 50

    def modes(share: float) -> np.ndarray:
        return _items(training_data.epoch_windows(fakes, blocks, 0, 0, 1, blend_share=share))[:, 1]

    none, half = modes(0.0), modes(0.5)
    # without pseudo-fakes: every real fake beside a real face, and nothing else
    assert (none == BLEND).sum() == 0 and (none == PAIR).sum() == (none == REAL).sum() == 100
    # half: about half the real faces with their pseudo-fake, still balanced
    assert 160 < (half == BLEND).sum() < 240
    assert (half != REAL).sum() * 2 == len(half)
    assert (modes(1.0) == BLEND).sum() == 400


def test_each_rank_takes_whole_row_groups_of_its_own():
    rng = np.random.default_rng(0)
    fakes = rng.random(5000) < 1 / 3
    blocks = np.arange(5000) // 64
    windows = training_data.epoch_windows(fakes, blocks, epoch=0, seed=0, world=3)
    read = [{int(b) for w in mine for b in blocks[w[:, 0]]} for mine in windows]
    assert all(read) and sum(map(len, read)) == len(set().union(*read)) == blocks.max() + 1
    for mine in windows:  # a window is a few whole row groups, its items among them
        for w in mine:
            assert len(w) and set(blocks[w[:, 0]]) == set(blocks[np.isin(blocks,
                                                                        blocks[w[:, 0]])])
    steps = training_data.steps_per_epoch(windows, 16)
    assert all(sum(-(-len(w) // 16) for w in mine) >= steps for mine in windows)
    assert steps * 16 * 3 > 0.9 * len(_items(windows))  # equal steps drop little
    # fewer row groups than ranks: both ranks still train, on shares of the one window
    few = training_data.epoch_windows(fakes[:40], np.zeros(40, int), 0, 0, world=2)
    assert [len(mine) for mine in few] == [1, 1] and training_data.steps_per_epoch(few, 4) > 0


def test_an_epoch_reads_each_row_group_once(tmp_path, monkeypatch):
    run = RunDir(str(tmp_path / "run"))
    tile = figures.png_bytes(np.zeros((8, 8, 3), np.uint8))
    for f in range(3):
        n = 150
        rows = [{"sample_id": f"{f}:{i}", "video_id": f"v{f}", "original_id": f"v{f}",
                 "label": i % 2, "split": "train", "kind": "pair" if i % 2 else "real",
                 "cluster": 0, "image": tile, "mask": tile, "face_box": [0, 8, 8, 0],
                 "landmarks": []} for i in range(n)]
        run.write_parquet(f"crops/{f}.parquet", pa.Table.from_pylist(rows), row_group_size=20)
    index = training_data.crop_index(run)
    assert index.column("block").to_numpy().max() == 3 * 8 - 1  # 8 row groups per file
    reads = []
    read_row_groups = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", lambda self, groups, **kw: (
        reads.extend(groups) or read_row_groups(self, groups, **kw)))
    fakes = index.column("label").to_numpy() == 1
    windows = training_data.epoch_windows(fakes, index.column("block").to_numpy(), 0, 0, 2)
    sample_ids = []
    for mine in windows:
        for w in mine:
            positions = np.unique(w[:, 0])
            crops = training_data.load_crops(run, index, positions)
            assert len(crops.images) == len(positions)
            assert all(i.shape == (8, 8, 3) for i in crops.images)
            sample_ids += [index.column("sample_id")[int(p)].as_py() for p in positions]
    assert len(reads) == 24  # each of the 24 row groups once, over both ranks
    assert sorted(sample_ids) == sorted(index.column("sample_id").to_pylist())


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
    return Crops(np.stack(images), np.zeros((2, 256, 256), np.uint8), np.array(boxes), marks,
                 np.ones(2, bool))


def test_pseudo_fakes_are_new_each_draw_and_their_masks_follow_the_crop(two_crops):
    items = [(0, REAL), (0, BLEND), (1, REAL), (1, BLEND)]
    labels = np.zeros(2)
    a = training_data.training_batch(two_crops, items, labels, 128, 0.15, 0.5, None,
                                     np.random.default_rng(0))
    b = training_data.training_batch(two_crops, items, labels, 128, 0.15, 0.5, None,
                                     np.random.default_rng(1))
    images, masks, ys, known = a
    assert ys.tolist() == [0, 1, 0, 1] and known.all()
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
    assert [n.split("/")[0] for n in folder.videos] == ["real"] * 34 + ["fake"] * 33
    assert sorted(folder.videos) == sorted(f"{p.parent.name}/{p.name}"
                                           for p in dev.glob("*/*.jpg"))
    assert all(i.shape == (96, 96, 3) for i in val.images + folder.images)


def test_crops_of_different_sizes_load_together(tmp_path):
    """Labelled crops keep their own size beside prepare's: a window may hold both."""
    run = RunDir(str(tmp_path / "run"))
    rows = [{"sample_id": f"s{i}", "video_id": f"v{i}", "original_id": f"v{i}", "label": i % 2,
             "split": "train", "kind": "crop", "cluster": -1,
             "image": figures.png_bytes(np.full((side, side, 3), 7, np.uint8)),
             "mask": b"" if i % 2 else figures.png_bytes(np.zeros((side, side), np.uint8)),
             "face_box": [0, side, side, 0], "landmarks": []}
            for i, side in enumerate([8, 16, 24, 32])]
    run.write_parquet("crops/a.parquet", pa.Table.from_pylist(rows))
    index = training_data.crop_index(run)
    crops = training_data.load_crops(run, index, np.arange(4))
    assert [i.shape[0] for i in crops.images] == [8, 16, 24, 32]
    assert [m.shape for m in crops.masks] == [(s, s) for s in (8, 16, 24, 32)]
    assert crops.has_mask.tolist() == [True, False, True, False]
    items = [(k, PAIR if k % 2 else REAL) for k in range(4)]
    images, masks, ys, known = training_data.training_batch(
        crops, items, np.array([0, 1, 0, 1]), 16, 0.0, 0.5, None, np.random.default_rng(0))
    assert all(i.shape == (16, 16, 3) for i in images) and masks.shape == (4, 16, 16)
    assert ys.tolist() == [0, 1, 0, 1] and known.tolist() == [True, False, True, False]
