"""Predict: is each video fake, and where was it altered? Any video files or folders of them
(local or s3://, no data layout needed), scored as the score stage scores them.

    python jobs/predict.py PATH [PATH ...] [--model MODEL_DIR] [--out DIR] [--budget-s 8]

Without --model, the reference detector shipped with the package scores (see
deepfake_lib/models/reference/MODEL_CARD.md).

Prints one line per video (probability, status, seconds); writes DIR/predictions.csv and a
picture per video (DIR/<file name>.png: classified frames, each face's box and the
detector's mask of altered pixels as heat). Exit 0 when at least one video was scored.
"""

from __future__ import annotations

import argparse
import sys

from deepfake_lib.cli import add_ray_flags, ray_connection, run_job
from deepfake_lib.core.checks import FlagParser
from deepfake_lib.execution.connect import RayConnection
from deepfake_lib.execution.resources import Resources
from deepfake_lib.stages.predict import PredictConfig, run_predict
from deepfake_lib.stages.score import AGGREGATIONS, ScoreConfig


def parse_args(argv: list[str] | None = None) -> tuple[PredictConfig, RayConnection]:
    p = FlagParser((PredictConfig, ScoreConfig), Resources.flag_rules("actor"),
                   description=__doc__,
                   formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="video files or folders (or s3:// URIs)")
    p.add_argument("--model", default="reference",
                   help="trained model folder (a run's RUN/model); default: the reference\n"
                        "detector shipped with the package (see its model card)")
    p.add_argument("--out", default="predictions", help="where predictions.csv and the pictures go")
    p.add_argument("--strip", type=int, default=6, help="classified frames shown per picture")
    p.add_argument("--budget-s", type=float, default=8.0, help="seconds per video (Kaggle: 8)")
    p.add_argument("--grace-s", type=float, default=4.0,
                   help="after budget + grace a worker is replaced")
    p.add_argument("--frames", type=int, default=32, help="frames classified per video")
    p.add_argument("--aggregation", default="confident", choices=AGGREGATIONS)
    p.add_argument("--fallback", type=float, default=0.5,
                   help="probability (0 to 1, then clipped) for videos with no answer")
    p.add_argument("--actors", type=int, default=None, help="default: what the cluster allows")
    p.add_argument("--cpus-per-actor", type=float, default=None,
                   help="default: a share of the free CPUs that fits every actor on a "
                        "node (1 with as many videos as CPUs)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--shared-fs", action="store_true",
                   help="local paths are on a file system every node mounts (without it a "
                        "multi-node cluster needs s3:// videos and model)")
    add_ray_flags(p)
    a = p.parse_args(argv)
    with p.checked():
        score = ScoreConfig(data=tuple(a.paths), out=a.out, model=a.model, budget_s=a.budget_s,
                            grace_s=a.grace_s, frames=a.frames, aggregation=a.aggregation,
                            fallback=a.fallback,
                            actors=Resources("actor", count=a.actors, cpus=a.cpus_per_actor,
                                             gpus=a.gpus_per_actor),
                            shared_fs=a.shared_fs)
        config = PredictConfig(paths=tuple(a.paths), model=a.model, out=a.out, strip=a.strip,
                               score=score)
    return config, ray_connection(p, a)


def main(argv: list[str] | None = None) -> int:
    config, connection = parse_args(argv)
    return run_job("predict", run_predict, config, connection)


if __name__ == "__main__":
    sys.exit(main())
