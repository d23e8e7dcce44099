"""Prepare stage: training crops with masks of altered pixels, and landmarks of real faces.

    python jobs/prepare.py --data PATH [PATH ...] --out RUN [--every 10] [--crop-size 256]
    python jobs/prepare.py --labelled CROPS [CROPS ...] --out RUN    # folders of face crops

Uses RUN/subset.parquet from the cluster stage when it exists, else every video found.
Labelled crops (real/ and fake/, or a metadata.csv: file, label, video, original) are split by
person: their faces are encoded and clustered here.
"""

from __future__ import annotations

import argparse
import sys

from deepfake_lib.cli import add_ray_flags, ray_connection, run_job
from deepfake_lib.core.checks import FlagParser
from deepfake_lib.execution.connect import RayConnection
from deepfake_lib.execution.resources import Resources
from deepfake_lib.media.faces import DETECTORS
from deepfake_lib.media.masks import DEFAULT_METHOD, METHODS
from deepfake_lib.stages.prepare import PrepareConfig, run_prepare


def parse_args(argv: list[str] | None = None) -> tuple[PrepareConfig, RayConnection]:
    p = FlagParser((PrepareConfig,), Resources.flag_rules("task"), description=__doc__,
                   formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", nargs="*", default=[],
                   help="folders (or s3:// URIs) of DFDC parts")
    p.add_argument("--labelled", nargs="*", default=[],
                   help="folders of labelled face crops (real/, fake/ or metadata.csv), taken as\n"
                        "tight face boxes; fakes without a mask train the label only")
    p.add_argument("--out", required=True, help="run directory: local path or s3://bucket/prefix")
    p.add_argument("--every", type=int, default=10,
                   help="crop every k-th frame (10: 30 crops per 10-s clip)")
    p.add_argument("--crop-size", type=int, default=256,
                   help="crops are resized to this square, px")
    p.add_argument("--margin", type=float, default=PrepareConfig.margin,
                   help="added on each side, times the face size (default: twice the model's\n"
                        "crop margin, so training can vary the framing)")
    p.add_argument("--detect-every-s", type=float, default=1.0,
                   help="seconds between face detections")
    p.add_argument("--detector", default="mtcnn", choices=DETECTORS)
    p.add_argument("--max-tracks", type=int, default=4, help="largest faces cropped per frame")
    p.add_argument("--mask-method", default=DEFAULT_METHOD, choices=METHODS)
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of identity clusters held out")
    p.add_argument("--batch-size", type=int, default=4, help="videos or pairs per Ray task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--video-timeout-s", type=float, default=600.0,
                   help="seconds one video or pair may take before it is a timeout row "
                        "(default 600)")
    p.add_argument("--cpus-per-task", type=float, default=1.0)
    p.add_argument("--memory-gb-per-task", type=float,
                   default=PrepareConfig.tasks.memory_gb,
                   help="memory each task asks Ray for, GB (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete earlier prepare output in --out first")
    p.add_argument("--shared-fs", action="store_true",
                   help="local paths are on a file system every node mounts (without it a "
                        "multi-node cluster needs s3:// paths)")
    add_ray_flags(p)
    a = p.parse_args(argv)
    with p.checked():
        config = PrepareConfig(data=tuple(a.data), out=a.out, labelled=tuple(a.labelled),
                               every=a.every,
                               crop_size=a.crop_size, margin=a.margin,
                               detect_every_s=a.detect_every_s, detector=a.detector,
                               max_tracks=a.max_tracks, mask_method=a.mask_method,
                               val_fraction=a.val_fraction, batch_size=a.batch_size,
                               video_timeout_s=a.video_timeout_s, seed=a.seed,
                               overwrite=a.overwrite, shared_fs=a.shared_fs,
                               tasks=Resources("task", cpus=a.cpus_per_task,
                                               memory_gb=a.memory_gb_per_task))
    return config, ray_connection(p, a)


def main(argv: list[str] | None = None) -> int:
    config, connection = parse_args(argv)
    return run_job("prepare", run_prepare, config, connection)


if __name__ == "__main__":
    sys.exit(main())
