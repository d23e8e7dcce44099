"""Train benchmark: training throughput (samples/s) of the default detector with 1 and 2 CPU
workers, and with smp's default U-Net decoder instead of the narrower one the project uses.
What the detector reaches is measured by ``benchmarks/detect.py``.

    .venv/bin/python benchmarks/train.py [--epochs 2] [--image-size 224] [--use-gpu]

Data: crops prepared from ../shared/data/videos/ffpp (real faces, each with a pseudo-fake
made on the fly, and the fakes of the pairs). Throughput is the last epoch's (warm).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402

from deepfake_lib.execution.connect import init_ray  # noqa: E402
from deepfake_lib.execution.resources import Resources  # noqa: E402
from deepfake_lib.models.detector import ModelConfig  # noqa: E402
from deepfake_lib.stages.prepare import PrepareConfig, run_prepare  # noqa: E402
from deepfake_lib.stages.train import TrainConfig, run_train  # noqa: E402

SMP_DEFAULT_DECODER = (256, 128, 64, 32, 16)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=ModelConfig.image_size)
    p.add_argument("--use-gpu", action="store_true")
    a = p.parse_args()
    init_ray()
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    crops = tmp / "crops_run"
    prepared = run_prepare(PrepareConfig(data=(str(SHARED / "videos" / "ffpp"),), out=str(crops),
                                         every=25))
    print(prepared.text())
    model = ModelConfig(image_size=a.image_size)
    runs = [("narrow decoder (default)", 1, model)]
    if not a.use_gpu:
        runs.append(("narrow decoder (default)", 2, model))
    runs.append(("smp's default decoder", 1, replace(model, decoder_channels=SMP_DEFAULT_DECODER)))
    rows, baseline = [], None
    for k, (name, workers, config) in enumerate(runs):
        out = tmp / f"run{k}"
        shutil.copytree(crops / "crops", out / "crops")
        run_train(TrainConfig(out=str(out), model=config, workers=Resources(
            "worker", count=workers, gpus=float(a.use_gpu)),
                              epochs=a.epochs))
        last = json.loads((out / "model" / "metrics.json").read_text())[-1]
        rate = last["train_samples"] / last["seconds"]
        baseline = baseline or rate
        rows.append([name, str(config.decoder_channels), workers, "GPU" if a.use_gpu else "CPU",
                     rate, rate / baseline])
    print_table(f"Train throughput: {model.encoder} U-Net at {model.image_size} px, "
                f"epoch {a.epochs} (warm)",
                ["decoder", "channels", "workers", "device", "samples/s",
                 "ratio to the first row"], rows)


if __name__ == "__main__":
    main()
