"""The train stage: the detector network on the prepare stage's crops, with Ray Train.

What each worker sees is :mod:`deepfake_lib.data.training_data`: its own items of a per-epoch plan
shared by all workers, real faces each with a pseudo-fake made from it afresh (self-blends and
other people's faces blended in, with exact masks), and fakes of real pairs. Loss: Dice + BCE
on the mask plus ``label_weight`` x BCE on the label.

Validation, on rank 0, uses real labelled faces only (never pseudo-fakes): the ``val`` split
of the crops (identities not trained on) and ``val_data`` folders of labelled crops. Each
epoch a temperature is fitted on the validation logits; ``val_logloss`` is the calibrated log
loss over all validation crops, and the epoch with the lowest is the model (its temperature
goes into ``config.json``). Without validation data the last epoch is kept, uncalibrated.
A checkpoint is reported every epoch; Ray Train restarts failed workers from the latest.
``RUN/model/`` gets the best weights (``model.pt``), ``config.json`` and every epoch's
``metrics.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, replace

import numpy as np

from deepfake_lib.core import records, storage
from deepfake_lib.core.checks import SEED, above, at_least, between, location, validate
from deepfake_lib.core.faults import NO_FAULTS, Faults
from deepfake_lib.core.progress import Progress
from deepfake_lib.core.storage import RunDir
from deepfake_lib.data import training_data
from deepfake_lib.data.training_data import ValidationSet
from deepfake_lib.execution import train_workers
from deepfake_lib.execution.resources import Resources
from deepfake_lib.execution.steps import check_stage, record_finish, record_start
from deepfake_lib.models import metrics
from deepfake_lib.models.detector import ModelConfig, build_model, label_logits, to_batch


@dataclass(frozen=True)
class TrainConfig:
    out: str = field(metadata=location())
    model: ModelConfig = field(default_factory=ModelConfig)
    # fine-tune this model (a folder, or reference: the shipped detector); its network and
    # preprocessing replace ``model``'s
    init_model: str | None = field(default=None, metadata=location(optional=True))
    # each worker's torch threads follow its CPUs
    workers: Resources = Resources("worker", count=2, cpus=1.0)
    epochs: int = field(default=5, metadata=at_least(1))
    batch_size: int = field(default=16, metadata=at_least(1))
    lr: float = field(default=3e-4, metadata=above(0))
    mask_weight: float = field(default=1.0, metadata=at_least(0))
    label_weight: float = field(default=1.0, metadata=at_least(0))
    # real faces shown with a pseudo-fake made from them each epoch (the rest train only
    # beside real fakes)
    blend_share: float = field(default=1.0, metadata=between(0, 1))
    # pseudo-fakes that blend in another person's face
    xray_share: float = field(default=0.5, metadata=between(0, 1))
    # folders of labelled crops (real/, fake/) to validate on
    val_data: tuple[str, ...] = field(default=(), metadata=location(many=True))
    augment: bool = True
    max_failures: int = field(default=2, metadata=at_least(-1))  # -1: Ray Train's no limit
    seed: int = field(default=0, metadata=SEED)
    shared_fs: bool = False          # local paths are mounted on every node
    overwrite: bool = False          # start afresh instead of resuming RUN/train_runs

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class TrainSummary:
    model_dir: str
    epochs: int
    best_epoch: int
    best: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.epochs > 0

    def text(self) -> str:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in self.best.items()
                          if k.startswith("val_") and isinstance(v, float))
        return (f"train: {self.epochs} epochs; best epoch {self.best_epoch}: {shown}; "
                f"model in {self.model_dir}")


def evaluate(model, sets: list[ValidationSet], config: ModelConfig, device) -> dict:
    """Scores of ``model`` on the validation sets, calibrated by a temperature fitted on all
    of them together (empty without validation data)."""
    import torch  # noqa: PLC0415

    if not sets:
        return {}
    logits = []
    model.eval()
    with torch.inference_mode():
        for s in sets:
            for start in range(0, len(s.images), 64):
                x = to_batch(s.images[start:start + 64], config).to(device)
                logits.append(label_logits(model, x, config.flip_average).cpu().numpy())
    model.train()
    z = np.concatenate(logits)
    y = np.concatenate([s.labels for s in sets])
    temperature = metrics.fit_temperature(y, z)
    probs = 1 / (1 + np.exp(-z / temperature))
    out = {f"val_{k}": v for k, v in metrics.binary_scores(y, probs).items()}
    out["val_logloss_uncalibrated"] = metrics.log_loss(y, 1 / (1 + np.exp(-z)))
    out["val_temperature"] = temperature
    at = 0
    for s in sets:
        p = probs[at:at + len(s.images)]
        at += len(s.images)
        out.update({f"val_{s.name}_{k}": v for k, v in metrics.binary_scores(s.labels, p).items()
                    if k in ("logloss", "auc")})
        per_video: dict[str, list[float]] = {}
        for v, q in zip(s.videos, p):
            per_video.setdefault(v, []).append(float(q))
        if len(per_video) < len(s.videos):  # crops grouped into videos: score the videos
            label_of = dict(zip(s.videos, s.video_labels))
            video = metrics.binary_scores(np.array([label_of[v] for v in per_video]),
                                          np.array([np.mean(q) for q in per_video.values()]))
            out.update({f"val_{s.name}_video_{k}": v for k, v in video.items()
                        if k in ("logloss", "auc", "count")})
    return out


def learning_rate(base: float, step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``: a function
    of the step alone, so a resumed run follows the same schedule."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return float(base * warm * 0.5 * (1 + np.cos(np.pi * min(step, total) / max(1, total))))


def detector_loss(mask_logits, logits, masks, labels, known, config: TrainConfig, dice):
    """``label_weight`` x BCE of the labels plus ``mask_weight`` x (Dice + BCE) of the masks
    of the items whose mask is ``known`` (a labelled fake's is not: it trains the label
    only). Tensors: ``(n, 1, H, W)`` mask logits and masks, ``(n, 1)`` logits and labels,
    ``(n,)`` bool ``known``."""
    import torch  # noqa: PLC0415

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    loss = config.label_weight * bce(logits, labels)
    if not bool(known.any()):  # every parameter stays in the graph, as DDP needs
        return loss + 0 * mask_logits.sum()
    masked, target = mask_logits[known], masks[known]
    return loss + config.mask_weight * (dice(masked, target) + bce(masked, target))


def train_loop(worker: train_workers.WorkerContext, config: TrainConfig,
               faults: Faults) -> None:
    """What each training worker runs (see :func:`deepfake_lib.execution.train_workers.fit`)."""
    import segmentation_models_pytorch as smp  # noqa: PLC0415
    import torch  # noqa: PLC0415

    rank, world = worker.rank, worker.world
    use_gpu = config.workers.gpus > 0
    if not use_gpu:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    torch.manual_seed(config.seed + rank)
    run = RunDir(config.out)
    index = training_data.crop_index(run)
    train = training_data.split_rows(index, "train")
    labels = index.column("label").to_numpy().astype(np.float32)
    fakes = labels[train] == 1
    blocks = index.column("block").to_numpy()[train]
    margin, size = config.model.crop_margin, config.model.image_size
    val_sets = (training_data.validation_sets(run, index, config.val_data, margin, size)
                if rank == 0 else [])

    model = build_model(config.model, pretrained=True)
    if config.init_model:
        from deepfake_lib.models.detector import resolve_model  # noqa: PLC0415

        with storage.local_copy(storage.join(resolve_model(config.init_model), "model.pt")) as p:
            model.load_state_dict(torch.load(p, map_location="cpu", weights_only=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    history: list[dict] = []
    start_epoch = 0
    with worker.latest_checkpoint() as d:
        if d is not None:
            for part, name in ((model, "model.pt"), (optimizer, "optimizer.pt")):
                part.load_state_dict(torch.load(os.path.join(d, name), weights_only=True))
            history = json.load(open(os.path.join(d, "metrics.json")))
            start_epoch = history[-1]["epoch"] + 1
    model = worker.prepare_model(model)
    device = worker.device
    net = model.module if hasattr(model, "module") else model
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    amp = use_gpu and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    augment = training_data.augmentations() if config.augment else None
    # the schedule's epoch length; epochs differ by a batch or two
    steps_per_epoch = training_data.steps_per_epoch(
        training_data.epoch_windows(fakes, blocks, 0, config.seed, world, config.blend_share),
        config.batch_size)
    total = steps_per_epoch * config.epochs

    for epoch in range(start_epoch, config.epochs):
        began = time.monotonic()
        rng = np.random.default_rng([config.seed, epoch, rank])
        windows = training_data.epoch_windows(fakes, blocks, epoch, config.seed, world,
                                              config.blend_share)
        steps = training_data.steps_per_epoch(windows, config.batch_size)
        progress = Progress(f"train: epoch {epoch + 1}/{config.epochs}",
                            steps * config.batch_size * world, unit="samples",
                            every_s=60.0 if rank == 0 else float("inf"), stream=worker.log)
        losses, samples = [], 0
        step = epoch * steps_per_epoch
        for part, crops, local in training_data.prefetched(run, index, train, windows[rank]):
            if len(losses) == steps:
                break
            chunk_labels = labels[train[np.unique(part[:, 0])]]
            for start in range(0, len(part), config.batch_size):
                if len(losses) == steps:
                    break
                if epoch > 0 and rank == world - 1:  # mid-epoch, once Ray recorded epoch 0's
                    faults.crash_once(before=worker.wait_for_recorded_checkpoints)
                batch = [(int(k), int(mode)) for k, mode in
                         zip(local[start:start + config.batch_size],
                             part[start:start + config.batch_size, 1])]
                images, masks_, ys, known = training_data.training_batch(
                    crops, batch, chunk_labels, size, margin, config.xray_share, augment, rng)
                x = to_batch(images, config.model).to(device)
                m = torch.from_numpy(masks_)[:, None].to(device)
                y = torch.from_numpy(ys)[:, None].to(device)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config.lr, step, total, steps_per_epoch // 2)
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    mask_logits, logits = model(x)
                    loss = detector_loss(mask_logits, logits, m, y,
                                         torch.from_numpy(known).to(device), config, dice)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                samples += len(batch)
                progress.update(len(batch) * world)
                step += 1
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "train_samples": samples * world, "seconds": time.monotonic() - began,
               "resumed": int(start_epoch > 0)}  # this attempt began from a checkpoint
        if rank == 0:
            row.update(evaluate(net, val_sets, config.model, device))
        # the checkpoint Ray keeps as best: lowest calibrated validation loss, else the latest
        row["selection_loss"] = row.get("val_logloss", -float(epoch))
        history.append(row)
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                torch.save(net.state_dict(), os.path.join(d, "model.pt"))
                torch.save(optimizer.state_dict(), os.path.join(d, "optimizer.pt"))
                json.dump(history, open(os.path.join(d, "metrics.json"), "w"), indent=2)
                shown = ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                  if isinstance(v, float) and k not in ("seconds", "selection_loss")
                                  and k.count("_") <= 1)
                print(f"train: epoch {epoch + 1}/{config.epochs}: {shown} "
                      f"({row['seconds']:.0f} s)", file=worker.log)
            worker.report({k: v for k, v in row.items() if isinstance(v, (int, float))},
                          d if rank == 0 else None)


def check_config(config: TrainConfig) -> ModelConfig:
    """Fail before any worker starts: bad flags, no crops, no validation folder where one is
    named, unbuildable model, missing weights or a model to fine-tune that does not load.
    Returns the model config (the one to fine-tune's, uncalibrated, when there is one)."""
    index = training_data.crop_index(RunDir(config.out))
    train = training_data.split_rows(index, "train")
    if not len(train):
        raise ValueError("no crop in the train split")
    fakes = int((index.column("label").to_numpy()[train] == 1).sum())
    items = 2 * (fakes + config.blend_share * (len(train) - fakes))  # expected, per epoch
    if items < (config.workers.count or 1):
        raise ValueError(
            f"about {items:.0f} training items an epoch ({fakes} fakes in the train split, "
            f"--blend-share {config.blend_share:g}): fewer than one per worker; raise "
            "--blend-share or add crops")
    for folder in config.val_data:
        training_data.labelled_folder(folder, 8)
    if config.init_model:
        from deepfake_lib.models.detector import load_model  # noqa: PLC0415

        start = load_model(config.init_model, device="cpu").config
        return replace(start, encoder_weights="none", temperature=1.0)
    build_model(config.model, pretrained=True)  # also fills the weights cache for the workers
    return config.model


def train_inputs(run: RunDir, config: TrainConfig) -> str:
    """A digest of what the stage reads from the run: the prepare stage's crop files."""
    return records.folder_digest(run, "crops")


def run_train(config: TrainConfig, faults: Faults = NO_FAULTS) -> TrainSummary:
    """Train on the Ray cluster and write ``RUN/model/``. A rerun with the same model resumes
    from the latest checkpoint in ``RUN/train_runs``. Raises ValueError (or
    FileNotFoundError, RuntimeError) for bad settings before any worker starts. ``faults`` is
    for tests: the last worker dies in the first step after Ray recorded the first
    checkpoint."""
    start = time.monotonic()
    run = RunDir(config.out)  # absolute: workers do not share the driver's working directory
    model_config = check_config(config)
    fine_tuned = [config.init_model] if config.init_model not in (None, "reference") else []
    config = replace(config, model=model_config, out=run.location,
                     val_data=tuple(RunDir(v).location for v in config.val_data),
                     init_model=(RunDir(fine_tuned[0]).location if fine_tuned
                                 else config.init_model))
    # a rerun resumes from RUN/train_runs: only a training of the same model on the same crops
    inputs = train_inputs(run, config)
    check_stage(run, "train", config, inputs=inputs, locations=[*config.val_data, *fine_tuned],
                resources=[("train workers (--workers, --cpus-per-worker, --use-gpu)",
                            config.workers)])
    record_start(run, "train", config, inputs=inputs)
    if config.overwrite:
        run.delete("train_runs")
        run.delete("model")
    result = train_workers.fit(train_loop, (config, faults), config.workers,
                               run.uri("train_runs/train"), "selection_loss",
                               config.max_failures, ("model.pt", "metrics.json"))
    history = json.loads(result.latest.get("metrics.json", b"[]"))
    if len(history) < config.epochs:  # Ray Train returns an aborted run (Ctrl-C) as a result
        raise KeyboardInterrupt
    best_history = json.loads(result.best["metrics.json"])
    run.write_bytes("model/model.pt", result.best["model.pt"])
    model_config = replace(model_config, temperature=best_history[-1].get("val_temperature", 1.0))
    run.write_bytes("model/config.json", model_config.to_json().encode())
    run.write_json("model/metrics.json", history)
    summary = TrainSummary(model_dir=run.uri("model"), epochs=len(history),
                           best_epoch=best_history[-1]["epoch"] + 1, best=best_history[-1],
                           seconds=time.monotonic() - start)
    record_finish(run, "train", config, summary, inputs)
    return summary
