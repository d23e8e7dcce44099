"""Train benchmark: samples/s with 1 and 2 CPU workers, and what the detector reaches on an
identity it never saw.

    .venv/bin/python benchmarks/train.py [--epochs 6] [--image-size 128] [--use-gpu]

Data: crops prepared from ../shared/data/videos/ffpp (three identities, each with a fake
and its original, plus self-blended fakes of the real faces), split by identity, so the val
split is a person the model never saw. Throughput is the last epoch's (warm) samples/s.
ImageNet weights cannot be downloaded here: the encoder starts from scratch unless
--encoder-weights names a file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402

from deepfake_lib.model import ModelConfig  # noqa: E402
from deepfake_lib.prepare import PrepareConfig, run_prepare  # noqa: E402
from deepfake_lib.runtime import init_ray  # noqa: E402
from deepfake_lib.training import TrainConfig, run_train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--encoder", default="tu-efficientnet_b0")
    p.add_argument("--encoder-weights", default="none")
    p.add_argument("--use-gpu", action="store_true")
    a = p.parse_args()
    init_ray()
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    crops = tmp / "crops_run"
    prepared = run_prepare(PrepareConfig(data=(str(SHARED / "videos" / "ffpp"),), out=str(crops)))
    print(prepared.text())
    model = ModelConfig(encoder=a.encoder, encoder_weights=a.encoder_weights,
                        image_size=a.image_size)
    rows, results = [], {}
    workers_list = [1] if a.use_gpu else [1, 2]
    for workers in workers_list:
        out = tmp / f"w{workers}"
        shutil.copytree(crops / "crops", out / "crops")
        summary = run_train(TrainConfig(out=str(out), model=model, workers=workers,
                                        use_gpu=a.use_gpu, epochs=a.epochs))
        history = json.loads((out / "model" / "metrics.json").read_text())
        last = history[-1]
        results[workers] = last["train_samples"] / last["seconds"]
        rows.append([workers, "GPU" if a.use_gpu else "CPU", results[workers],
                     results[workers] / results[workers_list[0]], summary.best_epoch,
                     summary.best.get("val_auc", float("nan")),
                     summary.best.get("val_video_auc", float("nan")),
                     summary.best.get("val_logloss", float("nan")),
                     summary.best.get("val_mask_iou", float("nan"))])
    print_table(f"Train: {model.encoder} U-Net at {model.image_size} px, {a.epochs} epochs, "
                f"encoder weights {model.encoder_weights}",
                ["workers", "device", "samples/s", "ratio to 1 worker", "best epoch",
                 "val AUC (crops, unseen person)", "val AUC (videos)", "val log loss",
                 "val mask IoU"], rows)


if __name__ == "__main__":
    main()
