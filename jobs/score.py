"""Score stage: one fake probability per video within a time budget, from a pool of actors.

    python jobs/score.py --data PATH [PATH ...] --out RUN [--model DIR] [--budget-s 8]
                         [--actors N] [--gpus-per-actor G] [--frames 32]
"""

from __future__ import annotations

import argparse
import sys

from deepfake_lib.cli import add_ray_flags, ray_connection, run_job
from deepfake_lib.core.checks import FlagParser
from deepfake_lib.execution.connect import RayConnection
from deepfake_lib.execution.resources import Resources
from deepfake_lib.stages.score import AGGREGATIONS, ScoreConfig, run_score


def parse_args(argv: list[str] | None = None) -> tuple[ScoreConfig, RayConnection]:
    p = FlagParser((ScoreConfig,), Resources.flag_rules("actor"), description=__doc__,
                   formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="folders (or s3:// URIs) of videos")
    p.add_argument("--out", required=True, help="run directory: local path or s3://bucket/prefix")
    p.add_argument("--model", default=None,
                   help="trained model folder (default RUN/model), or reference: the detector\n"
                        "shipped with the package")
    p.add_argument("--budget-s", type=float, default=8.0, help="seconds per video (Kaggle: 8)")
    p.add_argument("--grace-s", type=float, default=4.0,
                   help="after budget + grace a worker is replaced")
    p.add_argument("--frames", type=int, default=32, help="frames classified per video")
    p.add_argument("--detect-every-s", type=float, default=1.0)
    p.add_argument("--aggregation", default="confident", choices=AGGREGATIONS)
    p.add_argument("--clip", type=float, default=0.01,
                   help="probabilities clipped to [clip, 1-clip]")
    p.add_argument("--fallback", type=float, default=0.5,
                   help="probability (0 to 1, then clipped) for videos with no answer")
    p.add_argument("--actors", type=int, default=None, help="default: what the cluster allows")
    p.add_argument("--cpus-per-actor", type=float, default=None,
                   help="default: a share of the free CPUs that fits every actor on a "
                        "node (1 with as many videos as CPUs)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--start-timeout-s", type=float, default=600.0,
                   help="give up when no actor is ready after this long (default 600: "
                        "an autoscaled GPU node can take minutes to boot)")
    p.add_argument("--batch-size", type=int, default=64, help="videos per output file")
    p.add_argument("--overwrite", action="store_true", help="delete earlier scores in --out first")
    p.add_argument("--shared-fs", action="store_true",
                   help="local paths are on a file system every node mounts (without it a "
                        "multi-node cluster needs s3:// paths)")
    add_ray_flags(p)
    a = p.parse_args(argv)
    with p.checked():
        config = ScoreConfig(data=tuple(a.data), out=a.out, model=a.model, budget_s=a.budget_s,
                             grace_s=a.grace_s, frames=a.frames,
                             detect_every_s=a.detect_every_s, aggregation=a.aggregation,
                             clip=a.clip, fallback=a.fallback,
                             actors=Resources("actor", count=a.actors, cpus=a.cpus_per_actor,
                                              gpus=a.gpus_per_actor),
                             start_timeout_s=a.start_timeout_s, batch_size=a.batch_size,
                             overwrite=a.overwrite, shared_fs=a.shared_fs)
    return config, ray_connection(p, a)


def main(argv: list[str] | None = None) -> int:
    config, connection = parse_args(argv)
    return run_job("score", run_score, config, connection)


if __name__ == "__main__":
    sys.exit(main())
