"""Encode stage: find the faces of every real video and compute their 128-d encodings.

    python jobs/encode.py --data PATH [PATH ...] --out RUN [--all] [--detector auto]
    ray submit cluster.yaml jobs/encode.py -- --data s3://bucket/dfdc --out s3://bucket/run1
"""

from __future__ import annotations

import argparse
import sys

from deepfake_lib.cli import add_ray_flags, ray_connection, run_job
from deepfake_lib.core.checks import FlagParser
from deepfake_lib.execution.connect import RayConnection
from deepfake_lib.execution.resources import Resources
from deepfake_lib.media.faces import DETECTORS
from deepfake_lib.stages.encode import EncodeConfig, run_encode


def parse_args(argv: list[str] | None = None) -> tuple[EncodeConfig, RayConnection]:
    p = FlagParser((EncodeConfig,), Resources.flag_rules("task"), description=__doc__,
                   formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="folders (or s3:// URIs) of DFDC parts")
    p.add_argument("--out", required=True, help="run directory: local path or s3://bucket/prefix")
    p.add_argument("--all", action="store_true",
                   help="encode fakes too (default: REAL and unlabelled)")
    p.add_argument("--detector", default="auto", choices=DETECTORS,
                   help="face detector (default auto: MTCNN, retried larger)")
    p.add_argument("--tries", type=int, default=3,
                   help="frames tried before a video is declared face-less")
    p.add_argument("--try-every-s", type=float, default=2.0, help="seconds between tried frames")
    p.add_argument("--num-jitters", type=int, default=1,
                   help="face_recognition re-samplings per encoding (the seed: 10)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="videos per Ray task (one output file each)")
    p.add_argument("--video-timeout-s", type=float, default=600.0,
                   help="seconds one video may take before it is a timeout row (default 600)")
    p.add_argument("--cpus-per-task", type=float, default=1.0)
    p.add_argument("--memory-gb-per-task", type=float,
                   default=EncodeConfig.tasks.memory_gb,
                   help="memory each task asks Ray for, GB (default %(default)s)")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="tasks queued at once (default: 2 x cluster CPUs)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete earlier encode output in --out first")
    p.add_argument("--shared-fs", action="store_true",
                   help="local paths are on a file system every node mounts (without it a "
                        "multi-node cluster needs s3:// paths)")
    add_ray_flags(p)
    a = p.parse_args(argv)
    with p.checked():
        config = EncodeConfig(data=tuple(a.data), out=a.out, all_videos=a.all,
                              detector=a.detector, tries=a.tries, try_every_s=a.try_every_s,
                              num_jitters=a.num_jitters, batch_size=a.batch_size,
                              video_timeout_s=a.video_timeout_s, overwrite=a.overwrite,
                              shared_fs=a.shared_fs,
                              tasks=Resources("task", count=a.max_in_flight,
                                              cpus=a.cpus_per_task,
                                              memory_gb=a.memory_gb_per_task))
    return config, ray_connection(p, a)


def main(argv: list[str] | None = None) -> int:
    config, connection = parse_args(argv)
    return run_job("encode", run_encode, config, connection)


if __name__ == "__main__":
    sys.exit(main())
