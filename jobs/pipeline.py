"""The whole pipeline, stage after stage, on one run directory.

    python jobs/pipeline.py --out runs/demo                 # on the built-in sample
    python jobs/pipeline.py --out RUN --data PATH [PATH ...]
"""

from __future__ import annotations

import argparse
import sys

from deepfake_lib.cli import add_ray_flags, ray_connection, run_job
from deepfake_lib.core.checks import FlagParser
from deepfake_lib.execution.connect import RayConnection
from deepfake_lib.pipeline import PipelineConfig, run_pipeline


def parse_args(argv: list[str] | None = None) -> tuple[PipelineConfig, RayConnection]:
    p = FlagParser((PipelineConfig,), description=__doc__,
                   formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="run directory: local path or s3://bucket/prefix")
    p.add_argument("--data", nargs="*", default=[],
                   help="DFDC parts (default: the built-in sample)")
    p.add_argument("--sample-photos", default=None,
                   help="without --data: a folder of face photos, one person each, for the sample "
                        "(default: two portraits shipped inside installed packages)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every stage (default: redo only what changed; a stage asked for "
                        "other settings than it ran with refuses)")
    p.add_argument("--init-model", default="reference",
                   help="the model training fine-tunes: reference (the detector shipped with\n"
                        "the package), a model folder, or none to train --encoder from its\n"
                        "--encoder-weights at --image-size")
    p.add_argument("--encoder", default="tu-tf_efficientnet_lite0",
                   help="smp encoder of the detector (with --init-model none)")
    p.add_argument("--encoder-weights", default="imagenet",
                   help="imagenet (offline for tu-tf_efficientnet_lite0/lite2, else smp's hub), "
                        "none, or a weights file (.pth, .pt, .safetensors)")
    p.add_argument("--image-size", type=int, default=128,
                   help="training crop size, px (with --init-model none)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    p.add_argument("--shared-fs", action="store_true",
                   help="local paths are on a file system every node mounts (without it a "
                        "multi-node cluster needs s3:// paths)")
    add_ray_flags(p)
    a = p.parse_args(argv)
    init_model = None if a.init_model == "none" else a.init_model
    changed = [f for f in ("encoder", "encoder_weights", "image_size")
               if getattr(a, f) != p.get_default(f)]
    if init_model and changed:
        p.error(f"--{changed[0].replace('_', '-')}: the network comes from --init-model "
                f"{init_model}; add --init-model none to train a new one")
    with p.checked():
        return PipelineConfig(out=a.out, data=tuple(a.data), sample_photos=a.sample_photos,
                              overwrite=a.overwrite, shared_fs=a.shared_fs,
                              init_model=init_model, encoder=a.encoder,
                              encoder_weights=a.encoder_weights, image_size=a.image_size,
                              epochs=a.epochs, workers=a.workers), ray_connection(p, a)


def main(argv: list[str] | None = None) -> int:
    config, connection = parse_args(argv)
    return run_job("pipeline", run_pipeline, config, connection)


if __name__ == "__main__":
    sys.exit(main())
