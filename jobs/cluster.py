"""Cluster stage: the unique people in RUN/encodings, the smaller data set, and figures.
It runs in this process, without Ray, so it takes no --address.

    python jobs/cluster.py --out RUN [--method auto] [--per-cluster 3]
"""

from __future__ import annotations

import argparse
import sys

from deepfake_lib.cli import run_job
from deepfake_lib.core.checks import FlagParser
from deepfake_lib.models.cluster_methods import METHODS, ClusterParams
from deepfake_lib.stages.cluster import ClusterConfig, run_cluster


def parse_args(argv: list[str] | None = None) -> ClusterConfig:
    p = FlagParser((ClusterConfig, ClusterParams), description=__doc__,
                   formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="run directory holding encodings/ (local or s3://)")
    p.add_argument("--method", default="auto", choices=METHODS,
                   help="auto: PCA 50, 2-D t-SNE, DBSCAN with eps from the data (under 50 faces: "
                        "HDBSCAN,\nor DBSCAN given --eps or --min-samples); seed: the seed's "
                        "fixed PCA 50,\n3-D t-SNE (perplexity 50), DBSCAN(eps 1, min_samples 5)")
    p.add_argument("--pca-components", type=int, default=50)
    p.add_argument("--perplexity", type=float, default=None,
                   help="t-SNE perplexity (default min(15, (n-1)/3))")
    p.add_argument("--min-cluster-size", type=int, default=None,
                   help="HDBSCAN's, and DBSCAN's min_samples "
                        "(default max(clip(faces // 20, 2, 5), faces // 3000))")
    p.add_argument("--eps", type=float, default=None,
                   help="DBSCAN eps, a distance in the space DBSCAN runs in: the encodings'\n"
                        "(dbscan, or under 50 faces), else t-SNE's (default: knee of the\n"
                        "k-distance curve)")
    p.add_argument("--min-samples", type=int, default=None,
                   help="DBSCAN min_samples (default: the min cluster size)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of PCA, t-SNE and figure sampling")
    p.add_argument("--per-cluster", type=int, default=3,
                   help="real videos chosen per person for the subset")
    p.add_argument("--include-noise", action="store_true",
                   help="keep real videos whose face is noise")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="replace clusters made with other settings (later stages were made "
                        "from them)")
    a = p.parse_args(argv)
    with p.checked():
        params = ClusterParams(method=a.method, pca_components=a.pca_components,
                               perplexity=a.perplexity, min_cluster_size=a.min_cluster_size,
                               eps=a.eps, min_samples=a.min_samples, seed=a.seed)
        return ClusterConfig(out=a.out, params=params, per_cluster=a.per_cluster,
                             include_noise=a.include_noise, figures=not a.no_figures,
                             overwrite=a.overwrite)


def main(argv: list[str] | None = None) -> int:
    return run_job("cluster", run_cluster, parse_args(argv), connection=None)


if __name__ == "__main__":
    sys.exit(main())
