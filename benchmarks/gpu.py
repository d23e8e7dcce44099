"""GPU benchmark: the library's CUDA paths against its CPU paths on the same machine, in one run.

    .venv/bin/python benchmarks/gpu.py --model DIR [--device cuda]

1. **Scoring.** :func:`score_video` (the score stage's per-video work: decode, face tracking
   with the model's detector, classification of 32 frames) on the two 10-s 1080p DFDC videos of
   ``../shared/data``, with the detector and the model on the CPU (the baseline) and on
   ``--device``: best of 3 after a warm-up, and the probabilities side by side (they should
   agree to about 0.01).
2. **Training steps.** What the training loop does per step on a GPU (AMP float16, Dice + BCE on
   the mask, BCE on the label, AdamW), on the default architecture (ImageNet EfficientNet-Lite0
   U-Net) at 160 px, random images: milliseconds and samples per second, on the CPU at batch 16
   (the baseline) and on ``--device`` at batches 16 and 64.

It needs no Ray, so it also runs where Ray cannot be installed. Without a GPU, ``--device cpu``
runs both sides on the CPU (a check of the script itself).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402

from deepfake_lib.media import faces  # noqa: E402
from deepfake_lib.models.detector import ModelConfig, build_model, load_model, to_batch  # noqa: E402
from deepfake_lib.stages.score import ScoreConfig, score_video  # noqa: E402

VIDEOS = [SHARED / "videos" / "dfdc" / "lynaeydofd.mp4",   # REAL, 1920 x 1080
          SHARED / "videos" / "dfdc" / "brtujopkby.mp4"]   # FAKE, 1080 x 1920


def scoring(model_dir: str, device: str, repeats: int) -> dict[str, dict]:
    """Per video, the fastest of ``repeats`` :func:`score_video` rows on ``device``."""
    model = load_model(model_dir, device=device)
    detector = faces.get_face_detector(model.config.face_detector, device)
    config = ScoreConfig(data=(), out="unused")
    score_video(str(VIDEOS[0]), detector, model, config, 0.5)  # warm-up: kernels, caches
    return {path.name: min((score_video(str(path), detector, model, config, 0.5)
                            for _ in range(repeats)), key=lambda r: r["seconds"])
            for path in VIDEOS}


def training_step_ms(device: str, batch: int, size: int = 160) -> float:
    """Milliseconds per training step as the training loop takes it on ``device`` (mean of 20
    steps on a GPU, 3 on the CPU, after 3 warm-up steps)."""
    import segmentation_models_pytorch as smp
    import torch

    config = ModelConfig(image_size=size)
    net = build_model(config, pretrained=True).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-4)
    dice, bce = smp.losses.DiceLoss("binary", from_logits=True), torch.nn.BCEWithLogitsLoss()
    amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    rng = np.random.default_rng(0)
    x = to_batch([rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)],
                 config).to(device)
    m = torch.from_numpy((rng.random((batch, 1, size, size)) > 0.5).astype(np.float32)).to(device)
    y = torch.from_numpy((rng.random((batch, 1)) > 0.5).astype(np.float32)).to(device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            mask_logits, logits = net(x)
            loss = dice(mask_logits, m) + bce(mask_logits, m) + bce(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(3):
        step()
    steps = 20 if amp else 3
    if amp:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if amp:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained model directory")
    p.add_argument("--device", default="cuda", help="the device compared with the CPU")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import torch

    name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {a.device}: {name}, {torch.get_num_threads()} CPU threads")

    base, ours = scoring(a.model, "cpu", a.repeats), scoring(a.model, a.device, a.repeats)
    rows = []
    for video in base:
        for device, row in (("cpu", base[video]), (a.device, ours[video])):
            rows.append([video, device, row["status"], row["prob"], row["decode_s"],
                         row["locate_s"], row["classify_s"], row["seconds"],
                         base[video]["seconds"] / row["seconds"]])
    print_table("Scoring a 10-s 1080p video (32 frames classified), best of "
                f"{a.repeats}; speed-up against the CPU",
                ["video", "device", "status", "prob", "decode s", "locate s", "classify s",
                 "total s", "speed-up"], rows)

    cpu_ms = training_step_ms("cpu", 16)
    rows = [["cpu", 16, cpu_ms, 16 / cpu_ms * 1000, 1.0]]
    for batch in (16, 64):
        ms = training_step_ms(a.device, batch)
        rows.append([a.device, batch, ms, batch / ms * 1000, (batch / ms) / (16 / cpu_ms)])
    print_table("Training steps, EfficientNet-Lite0 U-Net at 160 px (AMP on a GPU); samples/s "
                "against the CPU at batch 16",
                ["device", "batch", "ms/step", "samples/s", "samples/s ratio"], rows)


if __name__ == "__main__":
    main()
