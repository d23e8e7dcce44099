"""Train stage: a segmentation network with a classification head, on Ray Train.

    python jobs/train.py --out RUN [--workers 2] [--use-gpu] [--encoder tu-tf_efficientnet_lite0]
                         [--encoder-weights imagenet|none|PATH] [--epochs 5]
    python jobs/train.py --out RUN --init-model reference|MODEL_DIR    # fine-tune a model
"""

from __future__ import annotations

import argparse
import sys

from deepfake_lib.cli import add_ray_flags, ray_connection, run_job
from deepfake_lib.core.checks import FlagParser
from deepfake_lib.execution.connect import RayConnection
from deepfake_lib.execution.resources import Resources
from deepfake_lib.models.detector import ModelConfig
from deepfake_lib.stages.train import TrainConfig, run_train


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, RayConnection]:
    p = FlagParser((TrainConfig, ModelConfig), Resources.flag_rules("worker"),
                   description=__doc__,
                   formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="run directory holding crops/ (local or s3://)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs each worker reserves; its torch threads follow it")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker, mixed precision")
    p.add_argument("--arch", default="Unet", help="segmentation-models-pytorch architecture")
    p.add_argument("--encoder", default="tu-tf_efficientnet_lite0", help="smp encoder name")
    p.add_argument("--encoder-weights", default="imagenet",
                   help="imagenet (offline for tu-tf_efficientnet_lite0/lite2, else smp's hub), "
                        "none, or a weights file (.pth, .pt, .safetensors)")
    p.add_argument("--init-model", default=None,
                   help="fine-tune this model: a model folder, or reference (the detector\n"
                        "shipped with the package); none (the default): train anew. Its\n"
                        "network, input size and crop margin are used, so --arch, --encoder,\n"
                        "--encoder-weights, --image-size and --crop-margin cannot be given")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16, help="per worker")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--image-size", type=int, default=ModelConfig.image_size,
                   help="network input, px")
    p.add_argument("--crop-margin", type=float, default=ModelConfig.crop_margin,
                   help="face crop margin the score stage uses, times the face size (training\n"
                        "varies it from 0 to twice this; prepare's crops must be that wide)")
    p.add_argument("--mask-weight", type=float, default=1.0, help="weight of the mask loss")
    p.add_argument("--label-weight", type=float, default=1.0, help="weight of the label loss")
    p.add_argument("--blend-share", type=float, default=1.0,
                   help="share of real faces shown with a pseudo-fake made from them each\n"
                        "epoch (0: learn only from real fakes, each beside a real face)")
    p.add_argument("--xray-share", type=float, default=0.5,
                   help="share of pseudo-fakes blending in another person's face (the rest\n"
                        "are self-blends)")
    p.add_argument("--val-data", nargs="*", default=[],
                   help="folders of labelled face crops (real/, fake/) to validate and calibrate\n"
                        "on, besides the val split; never trained on")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--max-failures", type=int, default=2,
                   help="worker failures survived (-1: no limit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--shared-fs", action="store_true",
                   help="local paths are on a file system every node mounts (without it a "
                        "multi-node cluster needs s3:// paths)")
    add_ray_flags(p)
    a = p.parse_args(argv)
    model_flags = ("arch", "encoder", "encoder_weights", "image_size", "crop_margin")
    changed = [f for f in model_flags if getattr(a, f) != p.get_default(f)]
    if a.init_model and changed:
        p.error(f"--{changed[0].replace('_', '-')}: the network and its preprocessing come from "
                "--init-model")
    with p.checked():
        model = ModelConfig(arch=a.arch, encoder=a.encoder, encoder_weights=a.encoder_weights,
                            image_size=a.image_size, crop_margin=a.crop_margin)
        workers = Resources("worker", count=a.workers, cpus=a.cpus_per_worker,
                            gpus=float(a.use_gpu))
        config = TrainConfig(out=a.out, model=model, workers=workers,
                             epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                             mask_weight=a.mask_weight, label_weight=a.label_weight,
                             blend_share=a.blend_share, xray_share=a.xray_share,
                             val_data=tuple(a.val_data),
                             init_model=None if a.init_model == "none" else a.init_model,
                             augment=not a.no_augment, max_failures=a.max_failures,
                             seed=a.seed, overwrite=a.overwrite, shared_fs=a.shared_fs)
    return config, ray_connection(p, a)


def main(argv: list[str] | None = None) -> int:
    config, connection = parse_args(argv)
    return run_job("train", run_train, config, connection)


if __name__ == "__main__":
    sys.exit(main())
