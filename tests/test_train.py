import json
import os
import shutil

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from deepfake_lib.core.faults import Faults
from deepfake_lib.core.storage import RunDir
from deepfake_lib.data import training_data
from deepfake_lib.execution.resources import Resources
from deepfake_lib.models import metrics
from deepfake_lib.models.detector import ModelConfig, load_model
from deepfake_lib.stages.train import (
    TrainConfig,
    detector_loss,
    learning_rate,
    run_train,
)

TINY = ModelConfig(encoder="resnet18", encoder_weights="none", image_size=64)
SEPARATES = 0.65  # AUC; chance is 0.5 (measured here: 0.79)


def _copy_crops(ffpp_crops, tmp_path):
    config, _ = ffpp_crops
    out = tmp_path / "run"
    shutil.copytree(os.path.join(config.out, "crops"), out / "crops")
    return out


@pytest.mark.ray
def test_two_workers_learn_checkpoint_and_give_a_usable_detector(ffpp_crops, tmp_path):
    out = _copy_crops(ffpp_crops, tmp_path)
    summary = run_train(TrainConfig(out=str(out), model=TINY, workers=Resources("worker", count=2),
                                    epochs=3, batch_size=8, lr=1e-3, augment=False))
    history = json.loads((out / "model" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for key in ("val_logloss", "val_auc", "val_accuracy", "val_split_video_logloss",
                "val_temperature", "val_logloss_uncalibrated"):
        assert key in history[0]
    # the model is the epoch with the lowest calibrated validation loss, with its temperature
    best = min(history, key=lambda h: h["val_logloss"])
    assert summary.best_epoch == best["epoch"] + 1
    assert detector_temperature(out) == best["val_temperature"]
    assert list((out / "train_runs" / "train").glob("checkpoint_*"))
    detector = load_model(str(out / "model"))
    assert detector.config.image_size == 64
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in
             [(40, 50, 3), (300, 300, 3), (64, 64, 3)]]
    probs = detector.predict(crops)
    assert probs.shape == (3,) and probs.dtype == np.float32
    assert ((probs > 0) & (probs < 1)).all()
    # it learned what it was taught: the fakes it trained on look faker than their originals
    assert _train_split_auc(detector, RunDir(str(out))) > SEPARATES


def _train_split_auc(detector, run: RunDir) -> float:
    """AUC of ``detector`` on the train split's labelled crops (real faces, and the fakes of
    pairs made from them), framed as the detector frames faces: what it was trained on."""
    index = training_data.crop_index(run)
    train = training_data.split_rows(index, "train")
    crops = training_data.load_crops(run, index, train)
    margin, size = detector.config.crop_margin, detector.config.image_size
    images = [training_data.recrop(image, mask, box, margin, size)[0]
              for image, mask, box in zip(crops.images, crops.masks, crops.boxes)]
    labels = index.column("label").to_numpy()[train]
    assert 0 < labels.sum() < len(labels)
    return metrics.binary_scores(labels, detector.predict(images))["auc"]


@pytest.mark.ray
def test_only_the_train_split_is_trained_on_never_validation_data(ffpp_crops, shared_data,
                                                                  tmp_path):
    """The samples the worker trains on are those of the train split's plan (each real face
    with its pseudo-fake, each real fake): were the val split or a --val-data folder trained
    on, there would be more. Both are evaluated: every crop of them, once."""
    out = _copy_crops(ffpp_crops, tmp_path)
    index = training_data.crop_index(RunDir(str(out)))
    train, val = (training_data.split_rows(index, s) for s in ("train", "val"))
    assert len(train) and len(val)
    dev = shared_data / "crops" / "dfdc_dev"
    run_train(TrainConfig(out=str(out), model=TINY, workers=Resources("worker", count=1),
                          epochs=1, batch_size=8, val_data=(str(dev),)))
    [epoch] = json.loads((out / "model" / "metrics.json").read_text())
    windows = training_data.epoch_windows(index.column("label").to_numpy()[train] == 1,
                                          index.column("block").to_numpy()[train], 0, 0, 1)
    steps = training_data.steps_per_epoch(windows, 8)
    batches = [len(items[at:at + 8]) for items in windows[0] for at in range(0, len(items), 8)]
    assert epoch["train_samples"] == sum(batches[:steps])
    dev_crops = [p for p in dev.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert epoch["val_count"] == len(val) + len(dev_crops)


@pytest.mark.ray
def test_a_killed_worker_resumes_from_the_last_checkpoint(ffpp_crops, tmp_path):
    out = _copy_crops(ffpp_crops, tmp_path)
    marker = tmp_path / "killed"
    run_train(TrainConfig(out=str(out), model=TINY, workers=Resources("worker", count=2), epochs=2,
                          batch_size=8),
              Faults(crash_once_marker=str(marker)))
    assert marker.exists()  # a worker died after the first epoch's checkpoint
    history = json.loads((out / "model" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    # epoch 1 ran in the restarted workers, which resumed from epoch 0's checkpoint: a restart
    # from scratch would have trained epoch 0 again and recorded resumed 0
    assert [h["resumed"] for h in history] == [0, 1]


def test_bad_flags_fail_before_any_worker_starts(ffpp_crops, tmp_path, capsys):
    from jobs.train import main

    out = _copy_crops(ffpp_crops, tmp_path)
    assert main(["--out", str(out), "--encoder", "no_such_encoder",
                 "--encoder-weights", "none"]) == 1
    assert "unknown architecture or encoder" in capsys.readouterr().err
    assert main(["--out", str(out), "--encoder", "resnet18",
                 "--encoder-weights", str(tmp_path / "missing.pt")]) == 1
    assert "encoder weights file not found" in capsys.readouterr().err
    assert main(["--out", str(out), "--encoder", "resnet18", "--encoder-weights", "imagenet"]) == 1
    assert "could not get imagenet weights" in capsys.readouterr().err
    (tmp_path / "notes.pth").write_text("these are notes, not weights\n")
    assert main(["--out", str(out), "--encoder-weights", str(tmp_path / "notes.pth")]) == 1
    assert "notes.pth is not a readable weights file" in capsys.readouterr().err
    # workers that no node can hold are refused at once, not waited for
    assert main(["--out", str(out), "--encoder", "resnet18", "--encoder-weights", "none",
                 "--use-gpu", "--workers", "2"]) == 1
    assert "2 x (1 CPU, 1 GPU)" in capsys.readouterr().err
    assert main(["--out", str(out), "--encoder", "resnet18", "--encoder-weights", "none",
                 "--cpus-per-worker", "64"]) == 1
    assert "64 CPU" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--out", str(tmp_path / "empty"), "--encoder-weights", "none"]) == 1
    assert "run jobs/prepare.py first" in capsys.readouterr().err
    # no pseudo-fakes asked for, and no real fake to learn from instead
    reals = tmp_path / "reals" / "crops"
    reals.mkdir(parents=True)
    for part in (out / "crops").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.filter(pc.equal(table.column("label"), 0)), reals / part.name)
    assert main(["--out", str(reals.parent), "--encoder", "resnet18", "--encoder-weights", "none",
                 "--blend-share", "0"]) == 1
    assert "0 fakes in the train split" in capsys.readouterr().err
    assert not (out / "train_runs").exists()


def detector_temperature(out) -> float:
    return json.loads((out / "model" / "config.json").read_text())["temperature"]


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [learning_rate(1.0, step, 100, 10) for step in range(101)]
    assert lrs[0] == 0.1 and abs(lrs[9] - np.cos(np.pi * 9 / 100) / 2 - 0.5) < 1e-9
    assert max(lrs) <= 1.0 and lrs[100] == 0.0
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.ray
def test_ctrl_c_during_training_says_where_the_run_stands(ffpp_crops, tmp_path):
    """Ray Train catches Ctrl-C itself and returns the aborted run as a result: the job
    still ends with its one line and exit code 130, and writes no model."""
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    out = _copy_crops(ffpp_crops, tmp_path)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "RAY_ADDRESS": "local"}
    job = subprocess.Popen(
        [sys.executable, str(root / "jobs" / "train.py"), "--out", str(out), "--epochs", "50",
         "--workers", "1", "--image-size", "64", "--encoder", "resnet18",
         "--encoder-weights", "none"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not any("train: epoch 1/50" in line for line in lines):  # training has begun
        assert job.poll() is None and time.monotonic() < deadline, "".join(lines[-20:])
        time.sleep(0.5)
    job.send_signal(signal.SIGINT)
    assert job.wait(timeout=180) == 130
    reader.join(10)
    assert any(line.startswith("train: interrupted; what was finished is in") for line in lines)
    assert not (out / "model" / "model.pt").exists()


def test_the_mask_loss_leaves_out_items_whose_mask_is_not_known():
    import segmentation_models_pytorch as smp
    import torch

    config = TrainConfig(out="unused")
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    torch.manual_seed(0)
    mask_logits, logits = torch.randn(4, 1, 8, 8), torch.randn(4, 1)
    masks = (torch.rand(4, 1, 8, 8) > 0.5).float()
    labels = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    known = torch.tensor([True, False, True, True])
    loss = detector_loss(mask_logits, logits, masks, labels, known, config, dice)
    other = masks.clone()
    other[1] = 1 - other[1]  # another mask where none is known: the same loss
    assert torch.equal(loss, detector_loss(mask_logits, logits, other, labels, known, config,
                                           dice))
    other[2] = 1 - other[2]  # and where one is: another loss
    assert not torch.equal(loss, detector_loss(mask_logits, logits, other, labels, known,
                                               config, dice))
    # no mask known at all: the label loss alone, the decoder still in the graph
    none = detector_loss(mask_logits.requires_grad_(), logits, masks, labels,
                         torch.zeros(4, dtype=torch.bool), config, dice)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert torch.allclose(none, expected)
    none.backward()
    assert mask_logits.grad is not None


@pytest.mark.ray
def test_fine_tuning_starts_from_the_given_model(ffpp_crops, tiny_model, tmp_path):
    import torch

    out = _copy_crops(ffpp_crops, tmp_path)
    # a learning rate too small to move the weights: the result is the model it started from
    run_train(TrainConfig(out=str(out), init_model=str(tiny_model),
                          workers=Resources("worker", count=1), epochs=1,
                          batch_size=8, lr=1e-12))
    start = torch.load(tiny_model / "model.pt", weights_only=True)
    tuned = torch.load(out / "model" / "model.pt", weights_only=True)
    weights = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.allclose(start[k], tuned[k], atol=1e-6) for k in weights)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["encoder"] == "resnet18" and config["image_size"] == 64
    assert main_refuses(["--out", str(out), "--init-model", str(tiny_model),
                         "--image-size", "96"], "--image-size: the network and its")


def main_refuses(argv: list[str], message: str) -> bool:
    import contextlib
    import io

    from jobs.train import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        main(argv)
    return message in err.getvalue()
