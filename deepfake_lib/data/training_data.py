"""What the train stage feeds the network: the prepare stage's crops, and pseudo-fakes made
from its real faces afresh every epoch.

Each epoch is a plan of *items*, ``(row, mode)`` pairs, shared by every worker (rank ``r`` of
``w`` takes items ``r, r + w, ...``, the same count on every rank, as DDP needs):

- every real face (crops of real videos, of photos and labelled real crops: label 0) appears
  twice: as itself (``real``) and as a pseudo-fake made from it (``blend``, label 1): a
  self-blend or, with probability ``xray_share``, another person's face blended in
  (:mod:`deepfake_lib.media.blend`), with its exact mask; with ``blend_share`` below 1, only
  that share of them, drawn afresh each epoch;
- real fakes (label 1: fakes of fake/original pairs with their masks, and labelled fake crops,
  which have no mask and train the label only) come with as many real faces again, so the
  classes stay balanced whatever the share of fakes.

Items of one real face stay next to each other (a batch sees a face and its pseudo-fake
together, as in Shiohara and Yamasaki's recipe). The epoch is shuffled by *windows*: the row
groups of the crop files (:data:`deepfake_lib.stages.prepare.CROPS_PER_ROW_GROUP` crops each) in a
new order each epoch, a window being consecutive row groups of about :data:`WINDOW` crops,
the items of a window shuffled among themselves. Windows go to the ranks in turn, so each
rank reads only its row groups, each once per epoch (the fake of a pair takes its real
partner from its own window; only a window without a real face reads one elsewhere).

Every image is then re-cut around its face box at a margin drawn from ``[0, 2 x margin]``
(the score stage crops at ``margin``), so the network sees tight and loose framings, and
augmented (flips, JPEG and video-like compression, blur, noise, colour). Validation never
sees a pseudo-fake: :func:`validation_sets` holds the val split's real videos and real
fakes, and labelled folders of crops (``real/``, ``fake/``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfake_lib.core.storage import RunDir
from deepfake_lib.media import blend, faces
from deepfake_lib.media.video import IMAGE_EXTENSIONS

INDEX_COLUMNS = ["sample_id", "video_id", "original_id", "label", "split", "kind", "cluster"]
WINDOW = 1024
REAL, BLEND, PAIR = 0, 1, 2  # item modes


def crop_index(run: RunDir) -> pa.Table:
    """Small columns of every crop, with where it is: its file (``file``), the row group in
    that file (``row_group``), its row in that group (``row``) and a number for the
    (file, row group) pair (``block``)."""
    names = run.list("crops", ".parquet")
    if not names:
        raise ValueError(f"no crops in {run.uri('crops')}: run jobs/prepare.py first")
    tables, blocks = [], 0
    for name in names:
        parquet = run.parquet_file(f"crops/{name}")
        sizes = [parquet.metadata.row_group(g).num_rows
                 for g in range(parquet.metadata.num_row_groups)]
        groups = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        rows = np.concatenate([np.arange(n, dtype=np.int32) for n in sizes] or [[]])
        t = parquet.read(columns=INDEX_COLUMNS)
        tables.append(t.append_column("file", pa.array([name] * t.num_rows))
                       .append_column("row_group", pa.array(groups))
                       .append_column("row", pa.array(rows.astype(np.int32)))
                       .append_column("block", pa.array(groups + blocks)))
        blocks += len(sizes)
    index = pa.concat_tables(tables)
    if index.num_rows == 0:
        raise ValueError(f"the crops in {run.uri('crops')} are empty: no face was prepared")
    return index


def split_rows(index: pa.Table, split: str) -> np.ndarray:
    """Positions of ``index`` rows in ``split``."""
    return np.flatnonzero(pc.equal(index.column("split"), split).to_numpy(zero_copy_only=False))


def epoch_windows(fakes: np.ndarray, blocks: np.ndarray, epoch: int, seed: int, world: int,
                  blend_share: float = 1.0, window: int = WINDOW) -> list[list[np.ndarray]]:
    """Every rank's windows of ``epoch`` over crops (``fakes``: True where the crop is a real
    fake) stored in row groups ``blocks``: ``[rank][k]`` is an ``(n, 2)`` int array of
    ``(position, mode)`` items (see the module docstring). The same on every rank.

    Windows hold about ``window`` crops, fewer on small data (at least eight windows per
    rank where there are row groups enough), and each goes to the rank with the fewest
    items so far. With fewer windows than ranks, each window is shared out among the ranks
    instead (they then read the same row groups)."""
    rng = np.random.default_rng([seed, epoch])
    order = np.argsort(blocks, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(blocks[order]) != 0])
    groups_of = np.split(order, starts[1:])
    window = max(1, min(window, len(blocks) // (8 * world)))
    fakes = np.asarray(fakes, bool)
    all_reals = np.flatnonzero(~fakes)
    windows, current = [], []
    for g in rng.permutation(len(groups_of)):
        current.append(groups_of[g])
        if sum(map(len, current)) >= window:
            windows.append(np.concatenate(current))
            current = []
    if current:
        windows.append(np.concatenate(current))
    ranks: list[list[np.ndarray]] = [[] for _ in range(world)]
    for positions in windows:
        reals = positions[~fakes[positions]]
        pairs = positions[fakes[positions]]
        # drawn only below 1: the default plan is the one of before blend_share existed
        blended = reals if blend_share >= 1 else reals[rng.random(len(reals)) < blend_share]
        groups = [[(r, REAL), (r, BLEND)] for r in blended]
        partners = reals if len(reals) else all_reals
        if len(partners):
            extra = rng.choice(partners, len(pairs), replace=len(pairs) > len(partners))
            groups += [[(p, PAIR), (r, REAL)] for p, r in zip(pairs, extra)]
        shuffled = [groups[g] for g in rng.permutation(len(groups))]
        least = min(range(world), key=lambda r: sum(map(len, ranks[r])))
        shares = ([(least, shuffled)] if len(windows) >= world else
                  [(r, shuffled[r::world][: len(shuffled) // world]) for r in range(world)])
        for r, share in shares:
            ranks[r].append(np.array([i for g in share for i in g], np.int64).reshape(-1, 2))
    return ranks


def steps_per_epoch(windows: list[list[np.ndarray]], batch_size: int) -> int:
    """Batches every rank takes (batches do not cross windows): the fewest any rank has, as
    distributed data parallel training needs the same number on every rank."""
    return min(sum(-(-len(items) // batch_size) for items in mine) for mine in windows)


@dataclass
class Crops:
    """Decoded crops: RGB images ``(H, W, 3)`` and their 0/1 masks ``(H, W)`` (all 0 where
    ``has_mask`` is False: a labelled fake's altered pixels are not known), sizes differing
    from crop to crop (prepare's crops and labelled crops as they came); face boxes ``(n, 4)``
    (top, right, bottom, left) and landmarks (``(72, 2)`` arrays, or empty)."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    boxes: np.ndarray
    landmarks: list[np.ndarray]
    has_mask: np.ndarray


def load_crops(run: RunDir, index: pa.Table, positions: np.ndarray) -> Crops:
    """The crops of ``index`` rows, in order, reading only the row groups that hold them."""
    files = np.asarray(index.column("file").to_pylist(), dtype=object)[positions]
    groups = index.column("row_group").to_numpy()[positions]
    rows = index.column("row").to_numpy()[positions]
    n = len(positions)
    images, masks = [None] * n, [None] * n
    boxes, marks = np.zeros((n, 4), np.int32), [np.zeros((0, 2), np.float32)] * n
    has_mask = np.ones(n, bool)
    for name in sorted(set(files.tolist())):
        at = np.flatnonzero(files == name)
        parquet = run.parquet_file(f"crops/{name}")
        wanted = sorted(set(groups[at].tolist()))
        offset = dict(zip(wanted, np.cumsum([0] + [parquet.metadata.row_group(g).num_rows
                                                   for g in wanted[:-1]])))
        table = parquet.read_row_groups(wanted, columns=["image", "mask", "face_box",
                                                         "landmarks"])
        table = table.take([offset[g] + r for g, r in zip(groups[at], rows[at])])
        for k, image, mask, box, points in zip(
                at, *(table.column(c).to_pylist() for c in ("image", "mask", "face_box",
                                                             "landmarks"))):
            images[k] = faces.decode_image(image)
            has_mask[k] = bool(mask)
            masks[k] = (faces.decode_image(mask)[..., 0] if mask
                        else np.zeros(images[k].shape[:2], np.uint8))
            boxes[k] = box
            marks[k] = np.asarray(points, np.float32).reshape(-1, 2)
    return Crops(images, masks, boxes, marks, has_mask)


def prefetched(run: RunDir, index: pa.Table, rows: np.ndarray, windows: list[np.ndarray]
               ) -> Iterator[tuple[np.ndarray, Crops, np.ndarray]]:
    """``(items, crops, local)`` of each window in turn, ``crops`` holding the window's
    crops (``rows`` maps item positions to ``index`` rows) and ``local`` each item's place
    in them. The next window is read and decoded in a thread while this one trains (Parquet
    reads and image decoding release the GIL)."""
    def load(items: np.ndarray) -> tuple[np.ndarray, Crops, np.ndarray]:
        positions, local = np.unique(items[:, 0], return_inverse=True)
        return items, load_crops(run, index, rows[positions]), local

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, windows[0]) if windows else None
        for k in range(len(windows)):
            ready = pending.result()
            pending = pool.submit(load, windows[k + 1]) if k + 1 < len(windows) else None
            yield ready


def pseudo_fake(crops: Crops, k: int, donors: np.ndarray, xray_share: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A pseudo-fake of crop ``k`` and its mask: another person's face (one of ``donors``,
    positions in ``crops`` with landmarks, the closest in pose) with probability
    ``xray_share``, else a self-blend."""
    image, points = crops.images[k], crops.landmarks[k]
    if len(donors) and rng.random() < xray_share:
        candidates = rng.choice(donors, min(8, len(donors)), replace=False)
        donor = min(candidates, key=lambda d: _pose_distance(crops.landmarks[d], points))
        try:
            return blend.xray_blend(image, points, crops.images[donor], crops.landmarks[donor],
                                    rng)
        except ValueError:
            pass  # landmarks that cannot be aligned: a self-blend instead
    return blend.self_blend(image, points, rng)


def _pose_distance(a: np.ndarray, b: np.ndarray) -> float:
    def unit(p: np.ndarray) -> np.ndarray:
        p = p - p.mean(0)
        return p / (np.linalg.norm(p) + 1e-6)

    return float(np.linalg.norm(unit(a) - unit(b)))


def recrop(image: np.ndarray, mask: np.ndarray, box: np.ndarray, margin: float, size: int,
           rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The square around ``box`` (top, right, bottom, left) grown by ``margin`` on each side,
    its centre moved by up to 5% of its side when ``rng`` is given, resized to ``size``."""
    top, right, bottom, left = (float(v) for v in box)
    side = max(bottom - top, right - left, 1.0) * (1 + 2 * margin)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    if rng is not None:
        cy, cx = np.array([cy, cx]) + rng.uniform(-0.05, 0.05, 2) * side
    y0, y1 = int(round(max(0.0, cy - side / 2))), int(round(min(image.shape[0], cy + side / 2)))
    x0, x1 = int(round(max(0.0, cx - side / 2))), int(round(min(image.shape[1], cx + side / 2)))
    shrink = cv2.INTER_AREA if y1 - y0 > size else cv2.INTER_LINEAR
    return (cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=shrink),
            cv2.resize(mask[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_NEAREST))


def augmentations():
    """Image-and-mask augmentations that fit deepfake detection: what a video's faces go
    through (compression, rescaling, blur, noise, light), never anything that would hide the
    blending boundary in a label-dependent way."""
    import albumentations as A  # noqa: PLC0415

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.ImageCompression(quality_range=(40, 95), p=0.7),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.06)),
                 A.Downscale(scale_range=(0.5, 0.9))], p=0.3),
        A.RandomBrightnessContrast(0.15, 0.15, p=0.5),
        A.HueSaturationValue(5, 10, 10, p=0.3),
    ])


def training_batch(crops: Crops, items: list[tuple[int, int]], labels: np.ndarray, size: int,
                   margin: float, xray_share: float, augment, rng: np.random.Generator
                   ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Images (RGB ``size`` squares), masks ``(n, size, size)``, labels and whether each
    mask is known (the mask loss leaves the others out) of ``items``, ``(k, mode)`` with
    ``k`` a position in ``crops``."""
    donors = np.array([k for k, points in enumerate(crops.landmarks) if len(points)], np.int64)
    images, masks, ys, known = [], [], [], []
    for k, mode in items:
        if mode == BLEND:
            others = donors[donors != k]
            image, mask = pseudo_fake(crops, k, others, xray_share, rng)
            y, has_mask = 1, True
        else:
            image, mask, y = crops.images[k], crops.masks[k], int(labels[k] if mode == PAIR else 0)
            has_mask = bool(crops.has_mask[k])
        image, mask = recrop(image, mask, crops.boxes[k], rng.uniform(0, 2 * margin), size, rng)
        if augment is not None:
            out = augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        images.append(image)
        masks.append(mask)
        ys.append(y)
        known.append(has_mask)
    return (images, np.stack(masks).astype(np.float32), np.array(ys, np.float32),
            np.array(known, bool))


@dataclass
class ValidationSet:
    """Labelled faces that are not pseudo-fakes: RGB crops, labels (1 fake), and the video
    each crop came from with that video's label (crops of folders are their own videos)."""

    name: str
    images: list[np.ndarray]
    labels: np.ndarray
    videos: list[str]
    video_labels: np.ndarray


def validation_sets(run: RunDir, index: pa.Table, val_data: tuple[str, ...], margin: float,
                    size: int) -> list[ValidationSet]:
    """The val split's real videos and real fakes (cut at ``margin``), then each folder of
    ``val_data`` (``real/`` and ``fake/`` image files, taken as they are). Never a
    pseudo-fake."""
    sets = []
    val = split_rows(index, "val")
    if len(val):
        crops = load_crops(run, index, val)
        images = [recrop(i, m, b, margin, size)[0]
                  for i, m, b in zip(crops.images, crops.masks, crops.boxes)]
        labels = index.column("label").to_numpy()[val].astype(np.int64)
        videos = np.asarray(index.column("video_id").to_pylist(), dtype=object)[val].tolist()
        sets.append(ValidationSet("split", images, labels, videos, labels.copy()))
    for folder in val_data:
        sets.append(labelled_folder(folder, size))
    return sets


def labelled_folder(folder: str, size: int) -> ValidationSet:
    """Crops in ``folder/real`` and ``folder/fake`` (local or s3://), resized to ``size``."""
    images, labels, names = [], [], []
    root = RunDir(folder)
    for label, sub in ((0, "real"), (1, "fake")):
        files = [n for n in root.list(sub) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        for name in sorted(files):
            image = faces.decode_image(root.read_bytes(f"{sub}/{name}"))
            shrink = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
            images.append(cv2.resize(image, (size, size), interpolation=shrink))
            labels.append(label)
            names.append(f"{sub}/{name}")
    if not images or len(set(labels)) < 2:
        raise ValueError(f"{folder} needs image files in both real/ and fake/")
    y = np.array(labels, np.int64)
    return ValidationSet(os.path.basename(folder.rstrip("/")) or folder, images, y, names, y)
