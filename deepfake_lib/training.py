"""The train stage: the detector network on the prepare stage's crops, with Ray Train.

Each worker reads only its own rows of ``RUN/crops/*.parquet``: every epoch, all workers draw
the same class-balanced plan (all crops of the smaller class, as many of the larger, freshly
sampled each epoch; DFDC has 5 fakes to 1 real), and rank ``r`` of ``w`` takes rows
``r, r + w, ...`` of it, cut to the same length on every rank, as DDP needs. (Ray Data's
streaming split would need CPUs beyond the training workers', which a small machine lacks.)

Loss: Dice + BCE on the mask plus ``label_weight`` x BCE on the label. Augmentations
(albumentations) act on image and mask together. Validation, on rank 0, over the ``val``
split (identities not trained on): crop- and video-level log loss, AUC, accuracy, mask IoU.
A checkpoint is reported every epoch; Ray Train keeps the best by validation log loss and
restarts failed workers from the latest. ``RUN/model/`` gets the best weights
(``model.pt``), ``config.json`` and every epoch's ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfake_lib import faces, metrics, storage
from deepfake_lib.model import ModelConfig, build_model, to_batch
from deepfake_lib.storage import RunDir

INDEX_COLUMNS = ["sample_id", "video_id", "label", "split", "kind"]
CHUNK = 1024  # crops decoded at once: each file is read once per chunk, not once per batch


@dataclass(frozen=True)
class TrainConfig:
    out: str
    model: ModelConfig = ModelConfig()
    workers: int = 2
    use_gpu: bool = False
    epochs: int = 5
    batch_size: int = 16
    lr: float = 3e-4
    mask_weight: float = 1.0
    label_weight: float = 1.0
    augment: bool = True
    max_failures: int = 2
    seed: int = 0
    overwrite: bool = False          # start afresh instead of resuming RUN/train_runs
    # Fault injection for tests: after its first checkpoint, the last worker creates this file
    # (if it does not exist yet) and kills its own process.
    crash_once_marker: str | None = None


@dataclass
class TrainSummary:
    model_dir: str
    epochs: int
    best_epoch: int
    best: dict = field(default_factory=dict)
    seconds: float = 0.0

    def text(self) -> str:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in self.best.items()
                          if k.startswith("val_") and isinstance(v, float))
        return (f"train: {self.epochs} epochs; best epoch {self.best_epoch}: {shown}; "
                f"model in {self.model_dir}")


def crop_index(run: RunDir) -> pa.Table:
    """Small columns of every crop, with the file (``file``) and row (``row``) holding it."""
    names = run.list("crops", ".parquet")
    if not names:
        raise ValueError(f"no crops in {run.uri('crops')}: run jobs/prepare.py first")
    tables = []
    for name in names:
        t = run.read_parquet(f"crops/{name}", columns=INDEX_COLUMNS)
        tables.append(t.append_column("file", pa.array([name] * t.num_rows))
                       .append_column("row", pa.array(np.arange(t.num_rows), pa.int32())))
    index = pa.concat_tables(tables)
    if index.num_rows == 0:
        raise ValueError(f"the crops in {run.uri('crops')} are empty: no face was prepared")
    return index


def epoch_rows(labels: np.ndarray, epoch: int, seed: int, rank: int, world: int,
               balance: bool = True) -> np.ndarray:
    """Positions (into ``labels``) this rank trains on in ``epoch``; the same length on every
    rank. With ``balance``, as many of each class as the smaller class has."""
    rng = np.random.default_rng([seed, epoch])
    by_class = [np.flatnonzero(labels == c) for c in (0, 1)]
    if balance and all(len(c) for c in by_class):
        n = min(len(c) for c in by_class)
        chosen = np.concatenate([rng.choice(c, n, replace=False) for c in by_class])
    else:
        chosen = np.arange(len(labels))
    chosen = rng.permutation(chosen)
    per_rank = len(chosen) // world
    return chosen[rank::world][:per_rank]


def load_crops(run: RunDir, index: pa.Table, positions: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images ``(n, H, W, 3)`` and masks ``(n, H, W)`` of ``index`` rows, in order,
    reading from each file only the rows wanted."""
    files = np.asarray(index.column("file").to_pylist(), dtype=object)[positions]
    rows = index.column("row").to_numpy()[positions]
    images: list = [None] * len(positions)
    masks: list = [None] * len(positions)
    for name in sorted(set(files.tolist())):
        at = np.flatnonzero(files == name)
        table = run.read_parquet(f"crops/{name}", columns=["image", "mask"]).take(rows[at])
        for k, image, mask in zip(at, table.column("image").to_pylist(),
                                  table.column("mask").to_pylist()):
            images[k] = faces.decode_image(image)
            masks[k] = faces.decode_image(mask)[..., 0]
    return np.stack(images), np.stack(masks)


def augmentations(size: int):
    """Image-and-mask augmentations that fit deepfake detection."""
    import albumentations as A  # noqa: PLC0415

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), p=0.5),
        A.ImageCompression(quality_range=(40, 95), p=0.5),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.06))], p=0.3),
        A.RandomBrightnessContrast(0.15, 0.15, p=0.5),
        A.Resize(size, size),
    ])


def _tensors(images: np.ndarray, masks_: np.ndarray, size: int, augment):
    import torch  # noqa: PLC0415

    if augment is not None:
        out = [augment(image=i, mask=m) for i, m in zip(images, masks_)]
        images = np.stack([o["image"] for o in out])
        masks_ = np.stack([o["mask"] for o in out])
    x = to_batch(list(images), size)
    m = np.stack([cv2.resize(k, (size, size), interpolation=cv2.INTER_NEAREST) for k in masks_])
    return x, torch.from_numpy(m.astype(np.float32))[:, None]


def evaluate(model, run: RunDir, index: pa.Table, config: TrainConfig, device) -> dict:
    """Crop- and video-level scores of ``model`` on the ``val`` split (empty if none)."""
    import torch  # noqa: PLC0415

    val = np.flatnonzero(pc.equal(index.column("split"), "val").to_numpy(zero_copy_only=False))
    if not len(val):
        return {}
    labels = index.column("label").to_numpy()[val]
    probs, ious = [], []
    model.eval()
    with torch.inference_mode():
        for chunk in range(0, len(val), CHUNK):
            images, masks_ = load_crops(run, index, val[chunk:chunk + CHUNK])
            for start in range(0, len(images), 64):
                x, m = _tensors(images[start:start + 64], masks_[start:start + 64],
                                config.model.image_size, None)
                mask_logits, logits = model(x.to(device))
                probs.append(torch.sigmoid(logits.float()).squeeze(1).cpu().numpy())
                ious.append(metrics.mask_iou((mask_logits.float() > 0).cpu().numpy(),
                                             m.numpy() > 0.5))
    model.train()
    probs = np.concatenate(probs)
    frame = metrics.binary_scores(labels, probs)
    videos = np.asarray(index.column("video_id").to_pylist(), dtype=object)[val]
    per_video = {}
    for v, p, y in zip(videos, probs, labels):
        per_video.setdefault(v, ([], y))[0].append(p)
    video = metrics.binary_scores(np.array([y for _, y in per_video.values()]),
                                  np.array([np.mean(p) for p, _ in per_video.values()]))
    out = {f"val_{k}": v for k, v in frame.items()}
    out.update({f"val_video_{k}": v for k, v in video.items()})
    out["val_mask_iou"] = float(np.mean(ious))
    return out


def train_loop(loop_config: dict) -> None:
    """The per-worker loop Ray Train runs (``loop_config["config"]`` is a TrainConfig dict)."""
    import ray.train  # noqa: PLC0415
    import ray.train.torch  # noqa: PLC0415
    import segmentation_models_pytorch as smp  # noqa: PLC0415
    import torch  # noqa: PLC0415

    raw = dict(loop_config["config"])
    config = TrainConfig(**{**raw, "model": ModelConfig(**raw["model"])})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not config.use_gpu:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    torch.manual_seed(config.seed + rank)
    run = RunDir(config.out)
    index = crop_index(run)
    train = np.flatnonzero(pc.equal(index.column("split"), "train").to_numpy(zero_copy_only=False))
    all_labels = index.column("label").to_numpy().astype(np.float32)
    labels = all_labels[train]

    model = build_model(config.model, pretrained=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    history: list[dict] = []
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            model.load_state_dict(torch.load(os.path.join(d, "model.pt"), weights_only=True))
            optimizer.load_state_dict(torch.load(os.path.join(d, "optimizer.pt"), weights_only=True))
            history = json.load(open(os.path.join(d, "metrics.json")))
        start_epoch = history[-1]["epoch"] + 1
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    net = model.module if hasattr(model, "module") else model
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    bce = torch.nn.BCEWithLogitsLoss()
    amp = config.use_gpu and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    augment = augmentations(config.model.image_size) if config.augment else None

    for epoch in range(start_epoch, config.epochs):
        began = time.monotonic()
        mine = train[epoch_rows(labels, epoch, config.seed, rank, world)]
        losses = []
        for chunk in range(0, len(mine), CHUNK):
            rows = mine[chunk:chunk + CHUNK]
            images, masks_ = load_crops(run, index, rows)
            for start in range(0, len(rows), config.batch_size):
                part = slice(start, start + config.batch_size)
                x, m = _tensors(images[part], masks_[part], config.model.image_size, augment)
                y = torch.from_numpy(all_labels[rows[part]])[:, None]
                x, m, y = x.to(device), m.to(device), y.to(device)
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    mask_logits, logits = model(x)
                    loss = config.mask_weight * (dice(mask_logits, m) + bce(mask_logits, m)) \
                        + config.label_weight * bce(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "train_samples": int(len(mine) * world), "seconds": time.monotonic() - began}
        if rank == 0:
            row.update(evaluate(net, run, index, config, device))
            row.setdefault("val_logloss", row["train_loss"])  # no val split: rank by train loss
        history.append(row)
        with tempfile.TemporaryDirectory() as d:
            report_checkpoint = None
            if rank == 0:
                torch.save(net.state_dict(), os.path.join(d, "model.pt"))
                torch.save(optimizer.state_dict(), os.path.join(d, "optimizer.pt"))
                json.dump(history, open(os.path.join(d, "metrics.json"), "w"), indent=2)
                report_checkpoint = ray.train.Checkpoint.from_directory(d)
                shown = ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                  if isinstance(v, float) and k != "seconds")
                print(f"train: epoch {epoch + 1}/{config.epochs}: {shown} "
                      f"({row['seconds']:.0f} s)", flush=True)
            ray.train.report({k: v for k, v in row.items() if isinstance(v, (int, float))},
                             checkpoint=report_checkpoint)
        if (config.crash_once_marker and rank == world - 1
                and not os.path.exists(config.crash_once_marker)):
            open(config.crash_once_marker, "w").close()
            os._exit(1)


def check_config(config: TrainConfig) -> ModelConfig:
    """Fail before any worker starts: bad flags, no crops, unbuildable model or missing
    weights. Returns the model config with the training prior filled in."""
    if config.workers < 1 or config.epochs < 1 or config.batch_size < 1:
        raise ValueError("--workers, --epochs and --batch-size must be at least 1")
    index = crop_index(RunDir(config.out))
    build_model(config.model, pretrained=True)  # also fills the weights cache for the workers
    train = pc.equal(index.column("split"), "train")
    labels = index.filter(train).column("label").to_numpy()
    if not len(labels):
        raise ValueError("no crop in the train split")
    return replace(config.model, prior=float(labels.mean()))


def run_train(config: TrainConfig) -> TrainSummary:
    """Train with Ray Train and write ``RUN/model/``. A rerun with the same model resumes from
    the latest checkpoint in ``RUN/train_runs``. Raises ValueError (or FileNotFoundError,
    RuntimeError) for bad settings before any worker starts."""
    from ray.train import (CheckpointConfig, FailureConfig, RunConfig,  # noqa: PLC0415
                           ScalingConfig, TrainingFailedError)
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    from deepfake_lib.runtime import init_ray  # noqa: PLC0415

    start = time.monotonic()
    run = RunDir(config.out)  # absolute: workers do not share the driver's working directory
    model_config = check_config(config)
    config = replace(config, model=model_config, out=run.location)
    if config.overwrite:
        run.delete("train_runs")
        run.delete("model")
    elif run.exists("train_runs/model_config.json"):
        earlier = ModelConfig.from_json(run.read_bytes("train_runs/model_config.json"))
        if replace(earlier, prior=0.5) != replace(model_config, prior=0.5):
            raise ValueError(f"{run.uri('train_runs')} holds a run of another model ({earlier}); "
                             "it would resume from it. Use --overwrite or a new --out.")
    run.write_bytes("train_runs/model_config.json", model_config.to_json().encode())
    init_ray()
    fs, path = storage.resolve(run.uri("train_runs"))
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"config": asdict(config)},
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=config.use_gpu),
        run_config=RunConfig(
            name="train", storage_path=path, storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val_logloss",
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=config.max_failures)),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise RuntimeError(f"training failed after {config.max_failures} restarts: "
                           f"{str(exc)[-2000:]}") from None
    best = min(result.best_checkpoints, key=lambda cm: cm[1]["val_logloss"])[0] \
        if result.best_checkpoints else result.checkpoint
    with best.as_directory() as d:
        run.write_bytes("model/model.pt", open(os.path.join(d, "model.pt"), "rb").read())
        best_history = json.load(open(os.path.join(d, "metrics.json")))
    with result.checkpoint.as_directory() as d:
        history = json.load(open(os.path.join(d, "metrics.json")))
    run.write_bytes("model/config.json", model_config.to_json().encode())
    run.write_json("model/metrics.json", history)
    summary = TrainSummary(model_dir=run.uri("model"), epochs=len(history),
                           best_epoch=best_history[-1]["epoch"] + 1, best=best_history[-1],
                           seconds=time.monotonic() - start)
    run.write_json("train.json", {"config": asdict(config), "summary": asdict(summary)})
    return summary
